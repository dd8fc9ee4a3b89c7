"""Anchors: a drop-in for ``torchvision.models.detection.anchor_utils.AnchorGenerator`` whose
anchors, for every level and every image, come from one kernel launch.

The anchors are torchvision's bit for bit and in its order (level, then feature location
row-major, then cell anchor): cell anchors ``round([-w, -h, w, h] / 2)`` computed in float32 and
cast to the features' dtype, shifted by ``(x, y) * stride`` with ``stride = padded image size //
feature size``.
"""
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._loader import check_device
from ._checks import call_op, check_tensor

__all__ = ["AnchorGenerator", "make_cell_anchors", "grid_anchors", "level_strides"]


def make_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], dtype: torch.dtype = torch.float32,
                      device: Union[str, torch.device] = "cpu") -> Tensor:
    """The ``[len(aspect_ratios) * len(sizes), 4]`` anchors centred on (0, 0): for each ratio
    (height / width) and size, a box of area ``size**2``, rounded to integers (torchvision's order)."""
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    if scales.dim() != 1 or ratios.dim() != 1 or scales.numel() == 0 or ratios.numel() == 0:
        raise ValueError(f"sizes and aspect_ratios must be non-empty sequences of numbers, got {sizes!r} "
                         f"and {aspect_ratios!r}")
    height_factor = ratios.sqrt()
    width_factor = 1 / height_factor
    half_w = (width_factor[:, None] * scales[None, :]).reshape(-1)
    half_h = (height_factor[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-half_w, -half_h, half_w, half_h], dim=1) / 2).round()


def level_strides(image_size: List[int], grid_sizes: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """torchvision's stride of each level: padded image size // feature size, per axis (0 for an
    empty level, which has no anchors)."""
    return [(_stride(image_size[0], grid[0]), _stride(image_size[1], grid[1])) for grid in grid_sizes]


def _stride(size: int, grid: int) -> int:
    return int(size) // int(grid) if int(grid) != 0 else 0


def _check_pairs(pairs, name: str, levels: int) -> None:
    if len(pairs) != levels:
        raise ValueError(f"{name} must have one (height, width) pair per level ({levels}), got {len(pairs)}")
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"{name}[{i}] must be a (height, width) pair, got {pair!r}")


def _flat_pairs(pairs: List[Tuple[int, int]], name: str, levels: int) -> List[int]:
    if not torch.jit.is_scripting():
        _check_pairs(pairs, name, levels)
    flat: List[int] = []
    for pair in pairs:
        flat.append(int(pair[0]))
        flat.append(int(pair[1]))
    return flat


def grid_anchors(cell_anchors: List[Tensor], grid_sizes: List[Tuple[int, int]], strides: List[Tuple[int, int]],
                 num_images: int = 1) -> Tensor:
    """Anchors of every level for ``num_images`` images in one launch: ``[num_images, total, 4]``.

    Args:
        cell_anchors: per level, the ``[A, 4]`` anchors of one location (``make_cell_anchors``);
            the output has their dtype and device.
        grid_sizes: per level, the feature map's (height, width).
        strides: per level, (stride_h, stride_w) in image pixels (``level_strides``; eagerly, ints
            or 0-d tensors).
    """
    if not torch.jit.is_scripting():
        if not isinstance(cell_anchors, (list, tuple)) or not cell_anchors:
            raise TypeError("cell_anchors must be a non-empty list of [A, 4] Tensors")
        for i, c in enumerate(cell_anchors):
            check_tensor(c, f"cell_anchors[{i}]")
        check_device(cell_anchors[0].device)
    levels = len(cell_anchors)
    sizes, steps = _flat_pairs(grid_sizes, "grid_sizes", levels), _flat_pairs(strides, "strides", levels)
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.grid_anchors, list(cell_anchors), sizes, steps, int(num_images))
    return torch.ops.fastmask.grid_anchors(list(cell_anchors), sizes, steps, int(num_images))


class AnchorGenerator(nn.Module):
    """Same constructor, attributes and call as torchvision's ``AnchorGenerator``:
    ``forward(image_list, feature_maps)`` returns one ``[total, 4]`` tensor per image."""

    __annotations__ = {"cell_anchors": List[Tensor]}

    def __init__(self, sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)):
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"sizes and aspect_ratios must have one entry per feature level, got {len(sizes)} "
                             f"and {len(aspect_ratios)}")
        self.sizes = sizes
        self.aspect_ratios = aspect_ratios
        self.cell_anchors = [self.generate_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]

    def generate_anchors(self, scales, aspect_ratios, dtype: torch.dtype = torch.float32,
                         device: torch.device = torch.device("cpu")) -> Tensor:
        return make_cell_anchors(scales, aspect_ratios, dtype, device)

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        self.cell_anchors = [c.to(dtype=dtype, device=device) for c in self.cell_anchors]

    def num_anchors_per_location(self) -> List[int]:
        return [len(s) * len(a) for s, a in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes: List[List[int]], strides: List[List[Tensor]]) -> List[Tensor]:
        """Per level, ``[H * W * A, 4]`` (torchvision's method)."""
        anchors = grid_anchors(self.cell_anchors, grid_sizes, strides)[0]
        counts = [int(g[0]) * int(g[1]) * c.shape[0] for g, c in zip(grid_sizes, self.cell_anchors)]
        return list(anchors.split(counts))

    def __prepare_scriptable__(self) -> "AnchorGenerator":
        # forward takes torchvision's ImageList (what GeneralizedRCNN passes), which TorchScript
        # resolves by name; torchvision is optional, so the name is bound only for scripting
        # (torch.jit.script calls this first).
        global ImageList
        from torchvision.models.detection.image_list import ImageList
        return self

    def forward(self, image_list: "ImageList", feature_maps: List[Tensor]) -> List[Tensor]:
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(f"AnchorGenerator has sizes and aspect ratios for {len(self.cell_anchors)} feature "
                             f"levels but got {len(feature_maps)} feature maps")
        grid_sizes = [(f.shape[-2], f.shape[-1]) for f in feature_maps]
        strides = level_strides(image_list.tensors.shape[-2:], grid_sizes)
        self.set_cell_anchors(feature_maps[0].dtype, feature_maps[0].device)
        anchors = grid_anchors(self.cell_anchors, grid_sizes, strides, len(image_list.image_sizes))
        return list(anchors.unbind(0))

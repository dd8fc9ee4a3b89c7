"""RoIAlign: a drop-in for ``torchvision.ops.roi_align`` / ``RoIAlign``.

Same arguments and the same results (bit for bit in float32/float64 on the CPU),
plus: float16/bfloat16 with float32 accumulation, native channels_last, boxes
of any floating dtype, a deterministic CUDA backward, and hardened inputs
(non-finite boxes give zeros, bad batch indices raise on the CPU, sampling is
bounded by the feature map rather than the box).
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .._loader import check_device
from ._checks import check_boxes, check_features, output_pair, resolve_deterministic

__all__ = ["roi_align", "RoIAlign", "convert_boxes_to_roi_format"]


def convert_boxes_to_roi_format(boxes: List[Tensor]) -> Tensor:
    """List of per-image ``[L_i, 4]`` boxes -> ``[K, 5]`` rois (batch index first)."""
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([ids, torch.cat(boxes, dim=0).to(ids.dtype)], dim=1)


def as_rois(boxes: Union[Tensor, List[Tensor]], features: Tensor) -> Tensor:
    """Validates ``boxes`` and returns them as a ``[K, 5]`` tensor on the features' device."""
    check_boxes(boxes)
    if isinstance(boxes, Tensor):
        return boxes
    if len(boxes) == 0:
        return torch.zeros((0, 5), dtype=features.dtype, device=features.device)
    return convert_boxes_to_roi_format(boxes)


def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: Union[int, Tuple[int, int], List[int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    deterministic: Optional[bool] = None,
) -> Tensor:
    """RoIAlign (Mask R-CNN), as ``torchvision.ops.roi_align``.

    Args:
        input: features ``[N, C, H, W]`` (float32/64/16, bfloat16; NCHW or channels_last).
        boxes: ``[K, 5]`` rois ``(batch index, x1, y1, x2, y2)`` or a list of ``[L_i, 4]`` boxes
            per image.
        output_size: ``(PH, PW)`` or an int.
        spatial_scale: feature size / image size.
        sampling_ratio: samples per bin and axis; ``<= 0`` adapts to the box (``ceil(size / PH)``).
        aligned: shift boxes by half a pixel (the correct alignment; False is the legacy one).
        deterministic: CUDA backward without atomics. Default: on when
            ``torch.use_deterministic_algorithms(True)``. The CPU kernels are always deterministic.

    Returns ``[K, C, PH, PW]`` in the dtype and memory format of ``input``. Boxes with a
    non-finite coordinate pool zeros and get no gradient. On the CPU a batch index outside
    ``[0, N)`` raises IndexError; on CUDA (where checking would sync with the host) such RoIs
    pool zeros.
    """
    check_features(input, "input")
    check_device(input.device)
    rois = as_rois(boxes, input)
    ph, pw = output_pair(output_size)
    return torch.ops.fastmask.roi_align(
        input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned),
        resolve_deterministic(deterministic),
    )


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (as ``torchvision.ops.RoIAlign``)."""

    def __init__(
        self,
        output_size: Union[int, Tuple[int, int], List[int]],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
        *,
        deterministic: Optional[bool] = None,
    ):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.deterministic = deterministic

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned,
            deterministic=self.deterministic,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )

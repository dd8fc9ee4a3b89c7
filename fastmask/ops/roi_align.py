"""RoIAlign: a drop-in for ``torchvision.ops.roi_align`` / ``RoIAlign``.

Same arguments and the same results (bit for bit in float32/float64 on the CPU),
plus: float16/bfloat16 with float32 accumulation, native channels_last, boxes
of any floating dtype, a deterministic CUDA backward, and hardened inputs
(non-finite boxes give zeros, bad batch indices raise on the CPU, sampling is
bounded by the feature map rather than the box).
"""
from typing import List, Optional, Union

import torch
from torch import Tensor, nn
from torch.jit.annotations import BroadcastingList2
from torch.nn.modules.utils import _pair

from .._loader import check_device
from ._checks import call_op, check_boxes, check_features, check_tensor, deterministic_flag, output_pair, traced_call

__all__ = ["roi_align", "RoIAlign", "convert_boxes_to_roi_format"]


def convert_boxes_to_roi_format(boxes: List[Tensor]) -> Tensor:
    """List of per-image ``[L_i, 4]`` boxes -> ``[K, 5]`` rois (batch index first)."""
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([ids, torch.cat(boxes, dim=0).to(ids.dtype)], dim=1)


def as_rois(boxes: Union[Tensor, List[Tensor]], features: Tensor) -> Tensor:
    """``boxes`` as a ``[K, 5]`` tensor (an empty list: no RoIs, in the features' dtype)."""
    if isinstance(boxes, Tensor):
        return boxes
    if len(boxes) == 0:
        return torch.zeros((0, 5), dtype=features.dtype, device=features.device)
    return convert_boxes_to_roi_format(boxes)


def check_roi_align_inputs(input: Tensor, boxes: Union[Tensor, List[Tensor]]) -> None:
    """The eager argument checks of roi_align (quantized features take quantized boxes)."""
    check_tensor(input, "input")
    check_device(input.device)
    if not input.is_quantized:
        check_features(input, "input")
    check_boxes(boxes, quantized=input.is_quantized)


def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    deterministic: Optional[bool] = None,
) -> Tensor:
    """RoIAlign (Mask R-CNN), as ``torchvision.ops.roi_align``.

    Args:
        input: features ``[N, C, H, W]`` (float32/64/16, bfloat16; NCHW or channels_last), or
            per-tensor quantized features of one image (quint8, qint8, qint32) with quantized boxes,
            pooled as torchvision pools them.
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
    pool zeros. Scriptable with TorchScript; one node (a leaf) of torch.fx traces.
    """
    if not torch.jit.is_scripting():
        node = traced_call(roi_align, input, boxes, output_size, spatial_scale, sampling_ratio, aligned, deterministic)
        if node is not None:
            return node
        check_roi_align_inputs(input, boxes)
        output_size = output_pair(output_size)
    rois = as_rois(boxes, input)
    size = _pair(output_size)
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.roi_align, input, rois, float(spatial_scale), size[0], size[1],
                       int(sampling_ratio), bool(aligned), deterministic_flag(deterministic))
    return torch.ops.fastmask.roi_align(
        input, rois, float(spatial_scale), size[0], size[1], int(sampling_ratio), bool(aligned),
        deterministic_flag(deterministic),
    )


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (as ``torchvision.ops.RoIAlign``)."""

    deterministic: Optional[bool]

    def __init__(
        self,
        output_size: BroadcastingList2[int],
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
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.deterministic
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})"
        )

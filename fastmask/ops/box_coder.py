"""Box coding: a drop-in for ``torchvision.models.detection._utils.BoxCoder`` on fused kernels.

``decode`` / ``encode`` are torchvision's expressions evaluated per box in one kernel instead of
~25 tensor ops. They equal torchvision's except where torch's vectorised ``exp`` / ``log`` (SLEEF
on the CPU) and the C library's round differently: at most a few ulp in a coordinate, seen in
about one box in a thousand. Both are differentiable (the backward is torchvision's formula).
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import check_tensor

__all__ = ["BoxCoder", "decode_boxes", "encode_boxes"]

DEFAULT_CLIP = math.log(1000.0 / 16)


def _weights(weights: Sequence[float]) -> List[float]:
    if len(weights) != 4:
        raise ValueError(f"weights must be 4 numbers (wx, wy, ww, wh), got {weights!r}")
    return [float(w) for w in weights]


def decode_boxes(rel_codes: Tensor, boxes: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = DEFAULT_CLIP) -> Tensor:
    """``[N, 4 * C]`` boxes (x1, y1, x2, y2) from ``[N, 4 * C]`` codes relative to ``[N, 4]`` boxes
    (``BoxCoder.decode_single``); the result has the codes' dtype."""
    check_tensor(rel_codes, "rel_codes")
    check_tensor(boxes, "boxes")
    check_device(rel_codes.device)
    return torch.ops.fastmask.decode_boxes(rel_codes, boxes, _weights(weights), float(bbox_xform_clip))


def encode_boxes(reference_boxes: Tensor, proposals: Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
                 ) -> Tensor:
    """``[N, 4]`` codes that take ``proposals`` to ``reference_boxes`` (``BoxCoder.encode_single``)."""
    check_tensor(reference_boxes, "reference_boxes")
    check_tensor(proposals, "proposals")
    check_device(reference_boxes.device)
    return torch.ops.fastmask.encode_boxes(reference_boxes, proposals, _weights(weights))


class BoxCoder:
    """Same constructor and methods as torchvision's ``BoxCoder``."""

    def __init__(self, weights: Tuple[float, float, float, float], bbox_xform_clip: float = DEFAULT_CLIP) -> None:
        self.weights = tuple(_weights(weights))
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: List[Tensor], proposals: List[Tensor]) -> List[Tensor]:
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes, dim=0), torch.cat(proposals, dim=0))
        return list(targets.split(boxes_per_image, 0))

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode(self, rel_codes: Tensor, boxes: List[Tensor]) -> Tensor:
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"boxes must be a list of [N_i, 4] Tensors, got {type(boxes).__name__}")
        check_tensor(rel_codes, "rel_codes")
        box_sum = sum(b.size(0) for b in boxes)
        concat_boxes = torch.cat(boxes, dim=0)
        if box_sum > 0:
            rel_codes = rel_codes.reshape(box_sum, -1)
        pred_boxes = self.decode_single(rel_codes, concat_boxes)
        if box_sum > 0:
            pred_boxes = pred_boxes.reshape(box_sum, -1, 4)
        return pred_boxes

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip)

"""Box coding: a drop-in for ``torchvision.models.detection._utils.BoxCoder`` on fused kernels.

``decode`` / ``encode`` are torchvision's expressions evaluated per box in one kernel instead of
~25 tensor ops. They equal torchvision's except where torch's vectorised ``exp`` / ``log`` (SLEEF
on the CPU) and the C library's round differently: an ulp of a coordinate, in about 1 value in
100 (float32; more in float64, where SLEEF's double exp is less often correctly rounded). Both are
differentiable (the backward is torchvision's formula).
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import call_op, check_tensor

__all__ = ["BoxCoder", "decode_boxes", "encode_boxes"]

DEFAULT_CLIP = math.log(1000.0 / 16)


def _weights(weights: Tuple[float, float, float, float]) -> List[float]:
    """The weights as the kernels take them (eagerly, any sequence of 4 numbers)."""
    if not torch.jit.is_scripting():
        if len(weights) != 4:
            raise ValueError(f"weights must be 4 numbers (wx, wy, ww, wh), got {repr(weights)}")
    return [float(weights[0]), float(weights[1]), float(weights[2]), float(weights[3])]


def decode_reference(rel_codes, boxes, weights, clip):
    """torchvision's BoxCoder.decode_single in tensor ops: the backward of decode_boxes."""
    boxes = boxes.to(rel_codes.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = rel_codes[:, 0::4] / wx
    dy = rel_codes[:, 1::4] / wy
    dw = torch.clamp(rel_codes[:, 2::4] / ww, max=clip)
    dh = torch.clamp(rel_codes[:, 3::4] / wh, max=clip)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    half_w = 0.5 * torch.exp(dw) * widths[:, None]
    half_h = 0.5 * torch.exp(dh) * heights[:, None]
    return torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
                       dim=2).flatten(1)


def encode_reference(reference_boxes: Tensor, proposals: Tensor, weights: List[float]) -> Tensor:
    """torchvision's encode_boxes in tensor ops, mixed dtypes included (each side computed in its
    own dtype, the weights in the reference's): the backward of encode_boxes, and its
    mixed-dtype path."""
    wx, wy, ww, wh = torch.as_tensor(weights, dtype=reference_boxes.dtype, device=reference_boxes.device).unbind(0)
    ex_w = proposals[:, 2] - proposals[:, 0]
    ex_h = proposals[:, 3] - proposals[:, 1]
    ex_ctr_x = proposals[:, 0] + 0.5 * ex_w
    ex_ctr_y = proposals[:, 1] + 0.5 * ex_h
    gt_w = reference_boxes[:, 2] - reference_boxes[:, 0]
    gt_h = reference_boxes[:, 3] - reference_boxes[:, 1]
    gt_ctr_x = reference_boxes[:, 0] + 0.5 * gt_w
    gt_ctr_y = reference_boxes[:, 1] + 0.5 * gt_h
    return torch.stack((wx * (gt_ctr_x - ex_ctr_x) / ex_w, wy * (gt_ctr_y - ex_ctr_y) / ex_h,
                        ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)), dim=1)


def decode_boxes(rel_codes: Tensor, boxes: Tensor, weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = DEFAULT_CLIP) -> Tensor:
    """``[N, 4 * C]`` boxes (x1, y1, x2, y2) from ``[N, 4 * C]`` codes relative to ``[N, 4]`` boxes
    (``BoxCoder.decode_single``); the result has the codes' dtype."""
    if not torch.jit.is_scripting():
        check_tensor(rel_codes, "rel_codes")
        check_tensor(boxes, "boxes")
        check_device(rel_codes.device)
        return call_op(torch.ops.fastmask.decode_boxes, rel_codes, boxes, _weights(weights), float(bbox_xform_clip))
    return torch.ops.fastmask.decode_boxes(rel_codes, boxes, _weights(weights), float(bbox_xform_clip))


def encode_boxes(reference_boxes: Tensor, proposals: Tensor,
                 weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> Tensor:
    """``[N, 4]`` codes that take ``proposals`` to ``reference_boxes`` (``BoxCoder.encode_single``).
    Mixed floating dtypes (fp16 proposals and fp32 targets under autocast) run torchvision's
    tensor expression, which computes each side in its own dtype."""
    if not torch.jit.is_scripting():
        check_tensor(reference_boxes, "reference_boxes")
        check_tensor(proposals, "proposals")
        check_device(reference_boxes.device)
    if (reference_boxes.dtype != proposals.dtype and reference_boxes.is_floating_point()
            and proposals.is_floating_point()):
        return encode_reference(reference_boxes, proposals, _weights(weights))
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.encode_boxes, reference_boxes, proposals, _weights(weights))
    return torch.ops.fastmask.encode_boxes(reference_boxes, proposals, _weights(weights))


class BoxCoder:
    """Same constructor and methods as torchvision's ``BoxCoder`` (and, like it, compiled as a
    TorchScript class when a scripted module holds one)."""

    def __init__(self, weights: Tuple[float, float, float, float], bbox_xform_clip: float = DEFAULT_CLIP) -> None:
        w = _weights(weights)
        self.weights = (w[0], w[1], w[2], w[3])
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, reference_boxes: List[Tensor], proposals: List[Tensor]) -> List[Tensor]:
        boxes_per_image = [len(b) for b in reference_boxes]
        targets = self.encode_single(torch.cat(reference_boxes, dim=0), torch.cat(proposals, dim=0))
        return list(targets.split(boxes_per_image, 0))

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        return encode_boxes(reference_boxes, proposals, self.weights)

    def decode(self, rel_codes: Tensor, boxes: List[Tensor]) -> Tensor:
        if not torch.jit.is_scripting():
            if not isinstance(boxes, (list, tuple)):
                raise TypeError(f"boxes must be a list of [N_i, 4] Tensors, got {type(boxes).__name__}")
            check_tensor(rel_codes, "rel_codes")
        box_sum = 0
        for b in boxes:
            box_sum += b.size(0)
        concat_boxes = torch.cat(boxes, dim=0)
        if box_sum > 0:
            rel_codes = rel_codes.reshape(box_sum, -1)
        pred_boxes = self.decode_single(rel_codes, concat_boxes)
        if box_sum > 0:
            pred_boxes = pred_boxes.reshape(box_sum, -1, 4)
        return pred_boxes

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        return decode_boxes(rel_codes, boxes, self.weights, self.bbox_xform_clip)

"""NMS: drop-ins for ``torchvision.ops.nms`` / ``batched_nms``, and NMS of many images in one call.

Same kept indices in the same order as torchvision (bit for bit on the CPU): IoU without +1,
suppression when IoU > iou_threshold, boxes visited by decreasing score with ties broken by
index (torchvision's stable sort). ``batched_nms`` never lets boxes of different ``idxs``
suppress each other, without torchvision's coordinate-offset trick (whose rounding can merge
classes for large coordinates in low precision).

NaN rule (no crash, same as torchvision's CPU kernel): a NaN score sorts before every number
(``torch.sort``'s order); a box with a NaN coordinate has NaN IoU with every box, so it neither
suppresses nor is suppressed.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import call_nms_op, check_tensor, traced_call

__all__ = ["nms", "batched_nms", "multi_image_nms"]


# nms, batched_nms and multi_image_nms are leaves of torch.fx traces (one node each) and script
# with TorchScript. Eager calls check their arguments in Python first; argument errors are
# NmsArgumentError / NmsTypeError, which are also RuntimeErrors, as torchvision's.
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices (int64) of the boxes kept, by decreasing score. ``boxes``: ``[N, 4]`` (x1, y1, x2, y2),
    float32/64/16 or bfloat16 (or per-tensor quantized, with quantized scores, as torchvision);
    ``scores``: ``[N]``. On CUDA it synchronises once, for the count."""
    if not torch.jit.is_scripting():
        node = traced_call(nms, boxes, scores, iou_threshold)
        if node is not None:
            return node
        check_tensor(boxes, "boxes")
        check_tensor(scores, "scores")
        check_device(boxes.device)
        return call_nms_op(torch.ops.fastmask.nms, boxes, scores, float(iou_threshold))
    return torch.ops.fastmask.nms(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes with different ``idxs`` (``[N]`` integer class or level ids) never
    suppress each other. Indices kept, by decreasing score. No boxes (``boxes.numel() == 0``):
    an empty index tensor, whatever the other arguments, as torchvision."""
    if not torch.jit.is_scripting():
        node = traced_call(batched_nms, boxes, scores, idxs, iou_threshold)
        if node is not None:
            return node
        check_tensor(boxes, "boxes")
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if not torch.jit.is_scripting():
        check_tensor(scores, "scores")
        check_tensor(idxs, "idxs")
        check_device(boxes.device)
        return call_nms_op(torch.ops.fastmask.batched_nms, boxes, scores, idxs, float(iou_threshold))
    return torch.ops.fastmask.batched_nms(boxes, scores, idxs, iou_threshold)


def multi_image_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    idxs: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    max_output: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """NMS of ``B`` images in one call (on CUDA: on the device, with no host sync).

    Args:
        boxes: ``[B, N, 4]`` boxes of each image (pad images with fewer boxes, see ``valid``).
        scores: ``[B, N]``.
        iou_threshold: suppress a box whose IoU with a kept, higher-scored box is > this.
        idxs: optional ``[B, N]`` integer class or level ids: boxes with different ids never
            suppress each other (per image, like ``batched_nms``).
        valid: optional ``[B, N]`` bool: invalid boxes (padding) are never kept and suppress nothing.
        max_output: keep at most this many boxes per image (default ``N``).

    Returns:
        ``keep``: ``[B, max_output]`` int64, the kept indices of each image (into its ``N`` boxes) by
        decreasing score, padded with ``-1``; ``counts``: ``[B]`` int64, how many are kept. Row ``b``
        equals ``torchvision.ops.batched_nms`` (or ``nms``) on image ``b``, truncated to ``max_output``.
    """
    if not torch.jit.is_scripting():
        node = traced_call(multi_image_nms, boxes, scores, iou_threshold, idxs, valid, max_output)
        if node is not None:
            return node
        check_tensor(boxes, "boxes")
        check_tensor(scores, "scores")
        check_device(boxes.device)
    limit = max_output if max_output is not None else (boxes.shape[1] if boxes.dim() == 3 else 0)
    if not torch.jit.is_scripting():
        return call_nms_op(torch.ops.fastmask.multi_image_nms, boxes, scores, idxs, valid, float(iou_threshold),
                           int(limit))
    return torch.ops.fastmask.multi_image_nms(boxes, scores, idxs, valid, iou_threshold, limit)

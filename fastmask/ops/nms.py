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
from ._checks import check_tensor

__all__ = ["nms", "batched_nms", "multi_image_nms"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices (int64) of the boxes kept, by decreasing score. ``boxes``: ``[N, 4]`` (x1, y1, x2, y2),
    float32/64/16 or bfloat16; ``scores``: ``[N]``. On CUDA it synchronises once, for the count."""
    check_tensor(boxes, "boxes")
    check_tensor(scores, "scores")
    check_device(boxes.device)
    return torch.ops.fastmask.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes with different ``idxs`` (``[N]`` integer class or level ids) never
    suppress each other. Indices kept, by decreasing score."""
    check_tensor(boxes, "boxes")
    check_tensor(scores, "scores")
    check_tensor(idxs, "idxs")
    check_device(boxes.device)
    return torch.ops.fastmask.batched_nms(boxes, scores, idxs, float(iou_threshold))


def multi_image_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    idxs: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
    max_output: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """NMS of ``B`` images in one call (one pair of kernel launches on CUDA, no host sync).

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
    check_tensor(boxes, "boxes")
    check_tensor(scores, "scores")
    check_device(boxes.device)
    if max_output is None:
        max_output = boxes.shape[1] if boxes.dim() == 3 else 0
    return torch.ops.fastmask.multi_image_nms(boxes, scores, idxs, valid, float(iou_threshold), int(max_output))

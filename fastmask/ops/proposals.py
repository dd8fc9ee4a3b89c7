"""Proposal generation: torchvision's ``RegionProposalNetwork`` post-processing for a whole
batch in one call (``fastmask.ops.RegionProposalNetwork``, in ``rpn.py``, uses it).

``generate_proposals`` reads the RPN head's outputs as they are (per level ``[B, A, H, W]``
objectness, ``[B, 4A, H, W]`` deltas): per image and level top-k by objectness, then for only
those anchors one kernel computes the anchor, decodes, clips to the image and applies the size
and score filters; level-aware NMS of every image runs in one ``multi_image_nms``; the top
``post_nms_top_n`` come back padded. No anchors are materialised, no Python loop over images or
levels runs kernels, and on CUDA nothing waits for the device.

The result equals ``RegionProposalNetwork.filter_proposals`` on the same inputs, except (1) a
decoded coordinate can differ by an ulp where torch's vectorised ``exp`` and the C library's
round differently (see ``box_coder``), which can flip a box whose IoU is within an ulp of the NMS
threshold; (2) the order of proposals whose scores are exactly equal: torchvision's CPU
``batched_nms`` above 1000 boxes orders them arbitrarily, here they keep candidate order;
(3) fp16/bf16 on CUDA: torchvision's CUDA ``batched_nms`` separates levels by adding an offset to
the coordinates in the boxes' dtype (steps of 4 px in fp16 at 5000 px, 32 px in bf16) and computes
IoU in float, so its NMS differs from an exact per-level NMS; fastmask's is exact (no offset).
"""
from typing import List, Tuple, Union

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import call_op, check_tensor
from .anchors import level_strides
from .box_coder import DEFAULT_CLIP, _weights

__all__ = ["generate_proposals", "unpad_proposals"]


def _check_tensor_list(x, name: str) -> None:
    if isinstance(x, Tensor) or not isinstance(x, (list, tuple)) or not x:
        raise TypeError(f"{name} must be a non-empty list of per-level Tensors")
    for i, t in enumerate(x):
        check_tensor(t, f"{name}[{i}]")


def image_sizes_tensor(image_sizes: List[Tuple[int, int]], device: torch.device) -> Tensor:
    """``[B, 2]`` int64 (height, width) from a list of pairs (an ``ImageList``'s ``image_sizes``)."""
    rows: List[List[int]] = []
    for h, w in image_sizes:
        rows.append([int(h), int(w)])
    return torch.tensor(rows, dtype=torch.int64, device=device).reshape(-1, 2)


def generate_proposals(
    objectness: List[Tensor],
    pred_bbox_deltas: List[Tensor],
    cell_anchors: List[Tensor],
    image_sizes: Union[Tensor, List[Tuple[int, int]]],
    padded_size: List[int],
    pre_nms_top_n: int = 1000,
    post_nms_top_n: int = 1000,
    nms_thresh: float = 0.7,
    score_thresh: float = 0.0,
    min_size: float = 1e-3,
    weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = DEFAULT_CLIP,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Proposals of a batch from the RPN head's outputs (defaults: torchvision's eval settings).

    Args:
        objectness: per level, ``[B, A, H, W]`` logits.
        pred_bbox_deltas: per level, ``[B, 4A, H, W]`` box deltas.
        cell_anchors: per level, the ``[A, 4]`` anchors of one location (``make_cell_anchors``,
            or an AnchorGenerator's ``cell_anchors``).
        image_sizes: ``[B, 2]`` integer tensor or list of (height, width) before padding: boxes are
            clipped to them.
        padded_size: (height, width) of the padded batch: each level's stride is
            ``padded_size // (H, W)``, as torchvision's AnchorGenerator computes it.

    Returns:
        ``boxes [B, post_nms_top_n, 4]``, ``scores [B, post_nms_top_n]`` (sigmoid of objectness),
        by decreasing score and zero after ``counts[b]`` rows, and ``counts [B]`` (int64).
    """
    if not torch.jit.is_scripting():
        _check_tensor_list(objectness, "objectness")
        _check_tensor_list(pred_bbox_deltas, "pred_bbox_deltas")
        _check_tensor_list(cell_anchors, "cell_anchors")
        check_device(objectness[0].device)
    if isinstance(image_sizes, Tensor):
        sizes = image_sizes
    else:
        sizes = image_sizes_tensor(image_sizes, objectness[0].device)
    flat_strides: List[int] = []
    for stride in level_strides(padded_size, [(o.shape[-2], o.shape[-1]) for o in objectness]):
        flat_strides.extend([stride[0], stride[1]])
    # The outputs carry no gradient (torchvision detaches them too).
    scores, deltas = [o.detach() for o in objectness], [d.detach() for d in pred_bbox_deltas]
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.generate_proposals, scores, deltas, list(cell_anchors), flat_strides, sizes,
                       int(pre_nms_top_n), int(post_nms_top_n), float(nms_thresh), float(score_thresh),
                       float(min_size), _weights(weights), float(bbox_xform_clip))
    return torch.ops.fastmask.generate_proposals(
        scores, deltas, list(cell_anchors), flat_strides, sizes, int(pre_nms_top_n), int(post_nms_top_n),
        float(nms_thresh), float(score_thresh), float(min_size), _weights(weights), float(bbox_xform_clip))


def unpad_proposals(boxes: Tensor, counts: Tensor) -> List[Tensor]:
    """The padded boxes (or scores) as torchvision's list of per-image tensors (one host sync)."""
    return [b[:n] for b, n in zip(boxes.unbind(0), torch.jit.annotate(List[int], counts.tolist()))]

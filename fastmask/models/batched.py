"""Box post-processing on padded ``[B, N, ...]`` tensors: no Python loop over images, no host sync
(fixed sizes, validity masks), so it works under CUDA graphs and ``torch.compile``."""
from typing import Tuple

import torch
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers

from ._components import multi_image_nms

__all__ = ["clip_boxes", "large_enough", "gather_rows", "proposals"]


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """torchvision's clip_boxes_to_image for each image: ``boxes [B, ..., 4]`` clamped to
    ``[0, (w, h, w, h)]`` of ``image_sizes [B, 2]`` (h, w)."""
    limits = image_sizes.to(boxes.dtype).flip(1).repeat(1, 2)
    limits = limits.view((boxes.shape[0],) + (1,) * (boxes.dim() - 2) + (4,))
    return torch.minimum(boxes.clamp(min=0), limits)


def large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """torchvision's remove_small_boxes as a mask: width and height at least ``min_size``."""
    return (boxes[..., 2] - boxes[..., 0] >= min_size) & (boxes[..., 3] - boxes[..., 1] >= min_size)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, k]]`` for ``x [B, N, ...]`` and ``index [B, K]`` (>= 0; zeros when N is 0)."""
    if x.shape[1] == 0:
        return x.new_zeros(index.shape + x.shape[2:])
    return x.gather(1, index.view(index.shape + (1,) * (x.dim() - 2)).expand(index.shape + x.shape[2:]))


def proposals(rpn, images: ImageList, features, image_sizes: Tensor) -> Tuple[Tensor, Tensor]:
    """torchvision's RegionProposalNetwork at inference with static shapes: ``(boxes [B, P, 4],
    valid [B, P])``, ``P = post_nms_top_n``; the valid proposals of image ``b``, in order, are
    torchvision's. Per-level top-k, decoding, clipping, small-box and score filters, then one
    ``multi_image_nms`` (per level) for all images."""
    feature_maps = list(features.values())
    objectness, deltas = rpn.head(feature_maps)
    anchors = rpn.anchor_generator(images, feature_maps)
    num_images = len(anchors)
    num_anchors_per_level = [o[0].numel() for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    boxes = rpn.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
    objectness = objectness.detach().view(num_images, -1)

    levels = torch.repeat_interleave(torch.arange(len(num_anchors_per_level), device=boxes.device),
                                     torch.tensor(num_anchors_per_level, device=boxes.device))
    top = rpn._get_top_n_idx(objectness, num_anchors_per_level)  # [B, K], the same K for every image
    boxes = clip_boxes(gather_rows(boxes, top), image_sizes)
    scores = torch.sigmoid(objectness.gather(1, top))
    valid = large_enough(boxes, rpn.min_size) & (scores >= rpn.score_thresh)
    keep, _ = multi_image_nms(boxes, scores, rpn.nms_thresh, idxs=levels[top], valid=valid,
                              max_output=rpn.post_nms_top_n())
    return gather_rows(boxes, keep.clamp(min=0)), keep >= 0

"""Box post-processing on padded ``[B, N, ...]`` tensors: no Python loop over images, no host sync
(fixed sizes, validity masks), so it works under CUDA graphs and ``torch.compile``."""
import torch
from torch import Tensor

__all__ = ["clip_boxes", "large_enough", "gather_rows"]


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """torchvision's clip_boxes_to_image for each image: ``boxes [B, ..., 4]`` clamped to
    ``[0, (w, h, w, h)]`` of ``image_sizes [B, 2]`` (h, w)."""
    limits = image_sizes.to(boxes.dtype).flip(1).repeat(1, 2)
    limits = limits.view([boxes.shape[0]] + [1] * (boxes.dim() - 2) + [4])
    return torch.minimum(boxes.clamp(min=0), limits)


def large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """torchvision's remove_small_boxes as a mask: width and height at least ``min_size``."""
    return (boxes[..., 2] - boxes[..., 0] >= min_size) & (boxes[..., 3] - boxes[..., 1] >= min_size)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, k]]`` for ``x [B, N, ...]`` and ``index [B, K]`` (>= 0; zeros when N is 0)."""
    shape = list(index.shape) + list(x.shape[2:])
    if x.shape[1] == 0:
        return x.new_zeros(shape)
    return x.gather(1, index.view(list(index.shape) + [1] * (x.dim() - 2)).expand(shape))


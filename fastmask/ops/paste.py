"""Mask pasting: a drop-in for torchvision's ``paste_masks_in_image`` with all masks in one call."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import call_op, check_tensor

__all__ = ["paste_masks_in_image"]

_MASK_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_arguments(masks, boxes, img_shape, padding) -> None:
    check_tensor(masks, "masks")
    check_tensor(boxes, "boxes")
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be a [N, 1, M, M] tensor, got shape {tuple(masks.shape)}")
    if masks.dtype not in _MASK_DTYPES:
        raise TypeError(f"masks must be float32, float64, float16 or bfloat16, got {masks.dtype}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a [N, 4] tensor (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be a floating-point tensor, got {boxes.dtype}")
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"got {masks.shape[0]} masks but {boxes.shape[0]} boxes; they must match one to one")
    if not isinstance(img_shape, (tuple, list, torch.Size)) or len(img_shape) != 2:
        raise TypeError(f"img_shape must be a pair (height, width), got {img_shape!r}")
    height, width = int(img_shape[0]), int(img_shape[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"img_shape must be positive, got {(height, width)}")
    if int(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    check_device(masks.device)


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, img_shape: Tuple[int, int], padding: int = 1, threshold: Optional[float] = None
) -> Tensor:
    """``torchvision.models.detection.roi_heads.paste_masks_in_image``: each ``[M, M]`` mask, padded by
    ``padding`` zeros, resized bilinearly into its box (expanded as torchvision does, rounded to whole
    pixels) and placed in an image of ``img_shape = (height, width)``.

    Args:
        masks: ``[N, 1, M, M]`` float32/64, float16 or bfloat16 (mask probabilities).
        boxes: ``[N, 4]`` floating ``(x1, y1, x2, y2)`` in image pixels.
        img_shape: ``(height, width)`` of the image.
        padding: zero border added around each mask before resizing (torchvision: 1).
        threshold: if given, return the bool masks ``pasted > threshold`` directly (4x less memory
            than the float masks, which are never materialised; ``.view(torch.uint8)`` gives uint8
            0/1 masks without a copy).

    Returns:
        ``[N, 1, height, width]`` in the masks' dtype (or bool). Equal to torchvision's within 1e-5
        (float32: at most 1-2 ulp). Boxes wholly outside the image give empty masks, where
        torchvision raises a shape error. No full-image intermediate per mask is allocated.
    """
    cut = None if threshold is None else float(threshold)
    if not torch.jit.is_scripting():
        _check_arguments(masks, boxes, img_shape, padding)
        return call_op(torch.ops.fastmask.paste_masks_in_image, masks, boxes, int(img_shape[0]), int(img_shape[1]),
                       int(padding), cut)
    return torch.ops.fastmask.paste_masks_in_image(masks, boxes, int(img_shape[0]), int(img_shape[1]), int(padding),
                                                   cut)

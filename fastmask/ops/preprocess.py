"""Mask R-CNN's input preprocessing fused: normalise, resize and batch in one pass per image.

``preprocess_images`` returns what torchvision's ``GeneralizedRCNNTransform`` puts in its
``ImageList`` (the padded batch and the resized sizes) without the per-image normalised copy, the
resized copy and the padding copy. ``fastmask.ops.GeneralizedRCNNTransform`` is the module drop-in.

The paper's preset (short side 800, long side at most 1024, every image on a 1024 x 1024 canvas)
is ``min_size=800, max_size=1024, canvas_size=(1024, 1024)``.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import call_op, check_tensor

__all__ = ["preprocess_images", "resized_image_size", "image_size", "boxes_to_original"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_size(image: Tensor) -> Tuple[int, int]:
    """(height, width) of an input image: uint8 images are ``[H, W, C]``, floating ones ``[C, H, W]``."""
    if image.dtype == torch.uint8:
        return int(image.shape[0]), int(image.shape[1])
    return int(image.shape[-2]), int(image.shape[-1])


def resized_image_size(
    height: int, width: int, min_size: int, max_size: int, fixed_size: Optional[Tuple[int, int]] = None
) -> Tuple[int, int]:
    """The size torchvision's transform resizes to: the short side to ``min_size`` unless the long
    side would exceed ``max_size`` (``floor(side * scale)``); ``fixed_size = (width, height)`` as is."""
    if fixed_size is not None:
        return int(fixed_size[1]), int(fixed_size[0])
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(float(height) * scale), math.floor(float(width) * scale)


def _batch_size(sizes: List[Tuple[int, int]], size_divisible: int,
                canvas_size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    if canvas_size is not None:
        height, width = int(canvas_size[0]), int(canvas_size[1])
        for h, w in sizes:
            if h > height or w > width:
                raise ValueError(f"a resized image of size {(h, w)} does not fit canvas_size {(height, width)}")
        return height, width
    max_h, max_w = sizes[0]
    for h, w in sizes:
        max_h, max_w = max(max_h, h), max(max_w, w)
    stride = float(size_divisible)
    return int(math.ceil(float(max_h) / stride) * stride), int(math.ceil(float(max_w) / stride) * stride)


def _check_images(images, image_mean: Sequence[float]) -> None:
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise TypeError(f"images must be a non-empty list of tensors, got {type(images).__name__}")
    for i, image in enumerate(images):
        check_tensor(image, f"images[{i}]")
        if image.dim() != 3:
            raise ValueError(f"images is expected to be a list of 3d tensors of shape [C, H, W] (floating) or "
                             f"[H, W, C] (uint8), got images[{i}] of shape {tuple(image.shape)}")
        if image.dtype == torch.uint8 and image.shape[2] != len(image_mean):
            raise ValueError(f"uint8 images are [H, W, C] with C = {len(image_mean)} (one per image_mean value), got "
                             f"images[{i}] of shape {tuple(image.shape)}; pass a [C, H, W] uint8 image as "
                             "image.permute(1, 2, 0) (a view, no copy)")
        if image.dtype != torch.uint8 and not image.is_floating_point():
            raise TypeError(f"images[{i}] must be uint8 or floating (in [0, 1]), got {image.dtype}")
        if image.numel() == 0:
            raise ValueError(f"images[{i}] is empty, shape {tuple(image.shape)}")
        check_device(image.device)


def _preprocess(images: List[Tensor], sizes: List[Tuple[int, int]], image_mean: List[float],
                image_std: List[float], size_divisible: int, canvas_size: Optional[Tuple[int, int]]) -> Tensor:
    height, width = _batch_size(sizes, size_divisible, canvas_size)
    flat: List[int] = []
    for h, w in sizes:
        flat.extend([h, w])
    mean, std = [float(m) for m in image_mean], [float(s) for s in image_std]
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.preprocess_images, list(images), flat, mean, std, height, width)
    return torch.ops.fastmask.preprocess_images(list(images), flat, mean, std, height, width)


def preprocess_images(
    images: List[Tensor],
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    size_divisible: int = 32,
    fixed_size: Optional[Tuple[int, int]] = None,
    canvas_size: Optional[Tuple[int, int]] = None,
) -> Tuple[Tensor, List[Tuple[int, int]]]:
    """Normalise, resize and batch ``images`` in one pass each (torchvision's transform in eval mode).

    Args:
        images: ``[C, H, W]`` floating images in ``[0, 1]`` (one dtype), or ``[H, W, C]`` uint8 images
            as decoded (taken as ``image / 255``); sizes may differ.
        min_size, max_size, fixed_size, size_divisible: as ``GeneralizedRCNNTransform``.
        canvas_size: ``(height, width)`` of the batch instead of padding to ``size_divisible``.

    Returns:
        ``(batch, image_sizes)``: ``[B, C, H, W]`` (float32 for uint8 input, else the images' dtype),
        zero-padded, and the resized ``(height, width)`` of each image. Equal to
        ``GeneralizedRCNNTransform``'s ``ImageList`` (float32: bit for bit on the common path, within
        2 ulp elsewhere).
    """
    _check_images(images, image_mean)
    sizes = [resized_image_size(*image_size(im), min_size, max_size, fixed_size) for im in images]
    return _preprocess(images, sizes, image_mean, image_std, size_divisible, canvas_size), sizes


def boxes_to_original(boxes: Tensor, image_size: Tuple[int, int], original_size: Tuple[int, int]) -> Tensor:
    """Boxes ``[N, 4]`` predicted on a resized image of ``image_size`` mapped back to the original
    image's coordinates: torchvision's ``resize_boxes(boxes, image_size, original_size)``, with its
    operations (float32 ratios), so the same values."""
    ratio_h = (torch.tensor(original_size[0], dtype=torch.float32, device=boxes.device)
               / torch.tensor(image_size[0], dtype=torch.float32, device=boxes.device))
    ratio_w = (torch.tensor(original_size[1], dtype=torch.float32, device=boxes.device)
               / torch.tensor(image_size[1], dtype=torch.float32, device=boxes.device))
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)

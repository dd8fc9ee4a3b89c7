"""A synthetic instance-segmentation data set that needs no download: images of random coloured
circles, squares and triangles on a plain background, with exact instance masks."""
from typing import Dict, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SyntheticShapes"]


class SyntheticShapes(Dataset):
    """``num_images`` images of ``1..max_shapes`` shapes each. Image ``i`` depends only on
    ``(seed, i)``, so any subset, order or number of workers gives the same images.

    Returns ``(image, target)``: ``image`` float32 ``[3, H, W]`` in [0, 1]; ``target`` has
    ``boxes`` ``[N, 4]`` (x1, y1, x2, y2) enclosing each mask, ``labels`` ``[N]`` (1 circle,
    2 square, 3 triangle), ``masks`` uint8 ``[N, H, W]`` (the visible pixels: a shape drawn later
    occludes earlier ones) and ``image_id``. A pixel belongs to a shape when its centre does.
    """

    classes = ("background", "circle", "square", "triangle")

    def __init__(self, num_images: int, image_size: Union[int, Tuple[int, int]] = 128, max_shapes: int = 4,
                 seed: int = 0, min_visible: int = 30):
        if num_images < 1:
            raise ValueError(f"num_images must be positive, got {num_images}")
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be positive, got {max_shapes}")
        self.num_images = num_images
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if min(self.image_size) < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        self.max_shapes = max_shapes
        self.seed = seed
        self.min_visible = min_visible  # pixels: more occluded shapes are dropped

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        h, w = self.image_size
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        background = torch.rand(3, generator=g) * 0.4
        image = background[:, None, None].expand(3, h, w).clone()
        masks, labels = [], []
        for _ in range(int(torch.randint(1, self.max_shapes + 1, (1,), generator=g))):
            label = int(torch.randint(1, 4, (1,), generator=g))
            size = float(torch.empty(1).uniform_(0.15, 0.4, generator=g)) * min(h, w)
            cx = float(torch.empty(1).uniform_(size / 2, w - size / 2, generator=g))
            cy = float(torch.empty(1).uniform_(size / 2, h - size / 2, generator=g))
            mask = _shape_mask(label, cx, cy, size, xs, ys)
            colour = 0.5 + torch.rand(3, generator=g) * 0.5  # brighter than every background
            image[:, mask] = colour[:, None]
            for m in masks:
                m &= ~mask
            masks.append(mask)
            labels.append(label)
        keep = [i for i, m in enumerate(masks) if int(m.sum()) >= self.min_visible]
        masks_t = torch.stack([masks[i] for i in keep]) if keep else torch.zeros(0, h, w, dtype=torch.bool)
        return image, {
            "boxes": _mask_boxes(masks_t),
            "labels": torch.tensor([labels[i] for i in keep], dtype=torch.int64),
            "masks": masks_t.to(torch.uint8),
            "image_id": torch.tensor(index),
        }


def _shape_mask(label: int, cx: float, cy: float, size: float, xs: Tensor, ys: Tensor) -> Tensor:
    r = size / 2
    if label == 1:  # circle
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if label == 2:  # square
        return ((xs - cx).abs() <= r) & ((ys - cy).abs() <= r)
    # upright triangle: apex at the top, base at the bottom of the square it fits in
    inside = ys <= cy + r
    for (x0, y0), (x1, y1) in (((cx, cy - r), (cx + r, cy + r)), ((cx + r, cy + r), (cx - r, cy + r)),
                               ((cx - r, cy + r), (cx, cy - r))):
        inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0
    return inside


def _mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of [N, H, W] bool masks, in pixel-edge coordinates (x2, y2 exclusive)."""
    if masks.shape[0] == 0:
        return torch.zeros(0, 4)
    rows, cols = masks.any(2), masks.any(1)
    h, w = masks.shape[1:]
    y1 = rows.float().argmax(1)
    y2 = h - rows.flip(1).float().argmax(1)
    x1 = cols.float().argmax(1)
    x2 = w - cols.flip(1).float().argmax(1)
    return torch.stack([x1, y1, x2, y2], 1).float()

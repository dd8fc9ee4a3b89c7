"""``GeneralizedRCNNTransform``: torchvision's Mask R-CNN transform with fastmask's fused
preprocessing and one-call mask pasting (needs torchvision, whose module it extends)."""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torchvision.models.detection import transform as tv_transform
from torchvision.models.detection.image_list import ImageList

from .paste import paste_masks_in_image
from .preprocess import _check_images, _preprocess, boxes_to_original, image_size, resized_image_size

__all__ = ["GeneralizedRCNNTransform"]


class GeneralizedRCNNTransform(tv_transform.GeneralizedRCNNTransform):
    """Drop-in for ``torchvision.models.detection.transform.GeneralizedRCNNTransform`` with fused
    preprocessing and one-call mask pasting. Same constructor, plus ``canvas_size`` (the paper's
    fixed 1024 x 1024 batch); also takes uint8 ``[H, W, C]`` images. In training each image's
    ``min_size`` is drawn with ``torch_choice``, in the same order, so the RNG stream is torchvision's.
    """

    def __init__(self, min_size, max_size, image_mean, image_std, size_divisible=32, fixed_size=None,
                 canvas_size: Optional[Tuple[int, int]] = None, **kwargs):
        super().__init__(min_size, max_size, image_mean, image_std, size_divisible, fixed_size, **kwargs)
        self.canvas_size = canvas_size

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
                ) -> Tuple[ImageList, Optional[List[Dict[str, Tensor]]]]:
        if not torch.jit.is_scripting():
            if isinstance(images, Tensor):  # a batch tensor iterates as torchvision's loop does
                images = list(images.unbind(0))
            _check_images(images, self.image_mean)
        if targets is not None:
            targets = [{k: v for k, v in t.items()} for t in targets]
        sizes: List[Tuple[int, int]] = []
        for i, image in enumerate(images):
            original = image_size(image)
            if self.training and self._skip_resize:
                sizes.append(original)
                continue
            min_size = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
            size = resized_image_size(original[0], original[1], min_size, self.max_size, self.fixed_size)
            sizes.append(size)
            if targets is not None:
                targets[i] = self._resize_target(targets[i], original, size)
        batch = _preprocess(images, sizes, self.image_mean, self.image_std, self.size_divisible, self.canvas_size)
        return ImageList(batch, sizes), targets

    @staticmethod
    def _resize_target(target: Dict[str, Tensor], original: Tuple[int, int], size: Tuple[int, int]):
        # torchvision's target path, with the same torch ops.
        if "masks" in target:
            masks = target["masks"][:, None].float()
            target["masks"] = torch.nn.functional.interpolate(masks, size=size)[:, 0].byte()
        target["boxes"] = tv_transform.resize_boxes(target["boxes"], list(original), list(size))
        if "keypoints" in target:
            target["keypoints"] = tv_transform.resize_keypoints(target["keypoints"], list(original), list(size))
        return target

    def postprocess(self, result: List[Dict[str, Tensor]], image_shapes: List[Tuple[int, int]],
                    original_image_sizes: List[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = boxes_to_original(pred["boxes"], im_s, o_im_s)
            if "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], o_im_s)
            if "keypoints" in pred:
                pred["keypoints"] = tv_transform.resize_keypoints(pred["keypoints"], list(im_s), list(o_im_s))
        return result

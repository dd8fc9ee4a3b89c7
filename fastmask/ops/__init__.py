"""fastmask's ops: drop-ins for the torchvision ops Mask R-CNN uses."""
from . import _registrations  # noqa: F401  (fake kernels and autograd for torch.ops.fastmask.*)
from .nms import batched_nms, multi_image_nms, nms
from .paste import paste_masks_in_image
from .poolers import MultiScaleRoIAlign
from .resize import resize_bilinear
from .roi_align import RoIAlign, roi_align
from .transform import GeneralizedRCNNTransform, boxes_to_original, preprocess_images

__all__ = ["roi_align", "RoIAlign", "MultiScaleRoIAlign", "nms", "batched_nms", "multi_image_nms",
           "resize_bilinear", "preprocess_images", "boxes_to_original", "GeneralizedRCNNTransform",
           "paste_masks_in_image"]

"""fastmask's ops: drop-ins for the torchvision ops Mask R-CNN uses."""
from . import _registrations  # noqa: F401  (fake kernels and autograd for torch.ops.fastmask.*)
from .nms import batched_nms, multi_image_nms, nms
from .paste import paste_masks_in_image
from .poolers import MultiScaleRoIAlign
from .preprocess import boxes_to_original, preprocess_images
from .resize import resize_bilinear
from .roi_align import RoIAlign, roi_align

__all__ = ["roi_align", "RoIAlign", "MultiScaleRoIAlign", "nms", "batched_nms", "multi_image_nms",
           "resize_bilinear", "preprocess_images", "boxes_to_original", "GeneralizedRCNNTransform",
           "paste_masks_in_image"]


def __getattr__(name):
    # The transform module extends torchvision's, which fastmask does not require: imported on use.
    if name == "GeneralizedRCNNTransform":
        from .transform import GeneralizedRCNNTransform

        return GeneralizedRCNNTransform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

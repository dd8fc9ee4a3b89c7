"""fastmask's ops: drop-ins for the torchvision ops Mask R-CNN uses."""
from . import _registrations  # noqa: F401  (fake kernels and autograd for torch.ops.fastmask.*)
from .nms import batched_nms, multi_image_nms, nms
from .poolers import MultiScaleRoIAlign
from .roi_align import RoIAlign, roi_align

__all__ = ["roi_align", "RoIAlign", "MultiScaleRoIAlign", "nms", "batched_nms", "multi_image_nms"]

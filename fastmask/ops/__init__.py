"""fastmask's ops: drop-ins for the torchvision ops Mask R-CNN uses."""
from . import _registrations  # noqa: F401  (fake kernels and autograd for torch.ops.fastmask.*)
from .anchors import AnchorGenerator, grid_anchors, make_cell_anchors
from .box_coder import BoxCoder, decode_boxes, encode_boxes
from .nms import batched_nms, multi_image_nms, nms
from .paste import paste_masks_in_image
from .poolers import MultiScaleRoIAlign
from .preprocess import boxes_to_original, preprocess_images
from .proposals import generate_proposals, unpad_proposals
from .resize import resize_bilinear
from .roi_align import RoIAlign, roi_align

__all__ = ["roi_align", "RoIAlign", "MultiScaleRoIAlign", "nms", "batched_nms", "multi_image_nms",
           "AnchorGenerator", "make_cell_anchors", "grid_anchors", "BoxCoder", "decode_boxes", "encode_boxes",
           "generate_proposals", "unpad_proposals", "RegionProposalNetwork",
           "resize_bilinear", "preprocess_images", "boxes_to_original", "GeneralizedRCNNTransform",
           "paste_masks_in_image"]


def __getattr__(name):
    # These modules extend torchvision's, which fastmask does not require: imported on use.
    if name == "GeneralizedRCNNTransform":
        from .transform import GeneralizedRCNNTransform

        return GeneralizedRCNNTransform
    if name == "RegionProposalNetwork":
        from .rpn import RegionProposalNetwork

        return RegionProposalNetwork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

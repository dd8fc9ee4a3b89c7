"""fastmask's ops: drop-ins for the torchvision ops Mask R-CNN uses."""
from . import _registrations  # noqa: F401  (fake kernels and autograd for torch.ops.fastmask.*)
from .anchors import AnchorGenerator, grid_anchors, make_cell_anchors
from .box_coder import BoxCoder, decode_boxes, encode_boxes
from .nms import batched_nms, multi_image_nms, nms
from .poolers import MultiScaleRoIAlign
from .proposals import RegionProposalNetwork, generate_proposals, unpad_proposals
from .roi_align import RoIAlign, roi_align

__all__ = ["roi_align", "RoIAlign", "MultiScaleRoIAlign", "nms", "batched_nms", "multi_image_nms",
           "AnchorGenerator", "make_cell_anchors", "grid_anchors", "BoxCoder", "decode_boxes", "encode_boxes",
           "generate_proposals", "unpad_proposals", "RegionProposalNetwork"]

"""The one place that picks each Mask R-CNN component's implementation: fastmask's where
``fastmask.ops`` provides it, torchvision's otherwise. Everything in ``fastmask.models`` takes
these names from here, so a new fastmask component is used everywhere once ``fastmask.ops``
exports it."""
from torchvision.models.detection.anchor_utils import AnchorGenerator as _TvAnchorGenerator
from torchvision.models.detection.roi_heads import paste_masks_in_image as _tv_paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork as _TvRegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform as _TvGeneralizedRCNNTransform

from .. import ops

AnchorGenerator = getattr(ops, "AnchorGenerator", _TvAnchorGenerator)
RegionProposalNetwork = getattr(ops, "RegionProposalNetwork", _TvRegionProposalNetwork)
GeneralizedRCNNTransform = getattr(ops, "GeneralizedRCNNTransform", _TvGeneralizedRCNNTransform)
paste_masks_in_image = getattr(ops, "paste_masks_in_image", _tv_paste_masks_in_image)
MultiScaleRoIAlign = ops.MultiScaleRoIAlign
multi_image_nms = ops.multi_image_nms

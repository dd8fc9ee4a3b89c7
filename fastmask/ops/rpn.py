"""A drop-in for torchvision's ``RegionProposalNetwork`` on ``generate_proposals``. It extends
torchvision's class, so ``fastmask.ops`` imports it on first use (torchvision is optional)."""
from typing import Dict, List, Optional, Tuple

from torch import Tensor
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.image_list import ImageList

from .box_coder import BoxCoder
from .proposals import generate_proposals, image_sizes_tensor, unpad_proposals

__all__ = ["RegionProposalNetwork"]


class RegionProposalNetwork(tv_rpn.RegionProposalNetwork):
    """torchvision's ``RegionProposalNetwork`` (same constructor, submodules and state dict) with
    its post-processing replaced by ``generate_proposals`` and its box coder by fastmask's.
    Training losses are torchvision's code, so they draw the same random samples."""

    # TorchScript types the attributes that are not modules from these (torchvision's names its BoxCoder).
    __annotations__ = {**tv_rpn.RegionProposalNetwork.__annotations__, "box_coder": BoxCoder}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

    def propose(self, images: ImageList, features: List[Tensor], objectness: List[Tensor],
                pred_bbox_deltas: List[Tensor], image_sizes: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Static-shape proposals: ``(boxes [B, P, 4], scores [B, P], counts [B])``. ``image_sizes``:
        an optional ``[B, 2]`` tensor on the device (default: ``images.image_sizes``), so that
        nothing is copied from the host."""
        self.anchor_generator.set_cell_anchors(features[0].dtype, features[0].device)
        if image_sizes is None:
            image_sizes = image_sizes_tensor(images.image_sizes, features[0].device)
        return generate_proposals(
            objectness, pred_bbox_deltas, self.anchor_generator.cell_anchors, image_sizes,
            images.tensors.shape[-2:], self.pre_nms_top_n(), self.post_nms_top_n(), self.nms_thresh,
            self.score_thresh, self.min_size, self.box_coder.weights, self.box_coder.bbox_xform_clip)

    def forward(self, images: ImageList, features: Dict[str, Tensor],
                targets: Optional[List[Dict[str, Tensor]]] = None) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        features = list(features.values())
        objectness, pred_bbox_deltas = self.head(features)
        boxes, _, counts = self.propose(images, features, objectness, pred_bbox_deltas)
        proposals = unpad_proposals(boxes, counts)

        losses: Dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None in training mode")
            anchors = self.anchor_generator(images, features)
            flat_objectness, flat_deltas = tv_rpn.concat_box_prediction_layers(objectness, pred_bbox_deltas)
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(flat_objectness, flat_deltas, labels,
                                                                  regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return proposals, losses

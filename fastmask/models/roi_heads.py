"""torchvision's RoIHeads with its detection post-processing done for all images at once."""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.models.detection import roi_heads as tv_roi_heads

from ._components import multi_image_nms

__all__ = ["RoIHeads"]

# torchvision's remove_small_boxes threshold in RoIHeads.postprocess_detections.
_MIN_BOX_SIZE = 1e-2


class RoIHeads(tv_roi_heads.RoIHeads):
    """``torchvision.models.detection.roi_heads.RoIHeads`` (same constructor, modules, losses), with
    ``postprocess_detections`` batched: the images' proposals are padded into ``[B, N]``, score
    threshold, empty-box removal and padding become one validity mask, and one
    ``multi_image_nms`` call does the class-wise NMS and top-k of every image. The detections
    equal torchvision's (same boxes, scores, labels, in the same order)."""

    def padded_detections(
        self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor], image_shapes: List[Tuple[int, int]]
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Detections of every image, padded: ``boxes [B, D, 4]``, ``scores [B, D]``,
        ``labels [B, D]`` and ``valid [B, D]`` (bool), ``D = detections_per_img``. No host sync."""
        device = class_logits.device
        sizes = [p.shape[0] for p in proposals]
        num_classes = class_logits.shape[-1]
        # (decode leaves the shape [0, 4 C] when there are no proposals at all)
        pred_boxes = self.box_coder.decode(box_regression, proposals).reshape(-1, num_classes, 4)
        pred_scores = F.softmax(class_logits, -1)
        boxes = pad_sequence(pred_boxes.split(sizes), batch_first=True)  # [B, N, C, 4]
        scores = pad_sequence(pred_scores.split(sizes), batch_first=True)  # [B, N, C]
        num_images, num_proposals = scores.shape[:2]

        # clip_boxes_to_image of each image: clamp to [0, (w, h, w, h)].
        hw = torch.tensor(image_shapes, dtype=boxes.dtype, device=device)  # [B, 2] (h, w)
        limits = hw.flip(1).repeat(1, 2).view(num_images, 1, 1, 4)
        boxes = torch.minimum(boxes.clamp(min=0), limits)

        # Every (proposal, class) pair but the background is a candidate, proposal-major as in torchvision.
        boxes = boxes[:, :, 1:].reshape(num_images, -1, 4)
        scores = scores[:, :, 1:].reshape(num_images, -1)
        labels = torch.arange(1, num_classes, device=device).repeat(num_images, num_proposals)
        is_proposal = torch.arange(num_proposals, device=device) < torch.tensor(sizes, device=device)[:, None]
        valid = is_proposal.repeat_interleave(num_classes - 1, dim=1)
        valid &= scores > self.score_thresh
        valid &= (boxes[..., 2] - boxes[..., 0] >= _MIN_BOX_SIZE) & (boxes[..., 3] - boxes[..., 1] >= _MIN_BOX_SIZE)

        keep, _ = multi_image_nms(boxes, scores, self.nms_thresh, idxs=labels, valid=valid,
                                  max_output=self.detections_per_img)
        kept = keep >= 0
        index = keep.clamp(min=0)
        return (
            boxes.gather(1, index[..., None].expand(-1, -1, 4)),
            scores.gather(1, index),
            labels.gather(1, index),
            kept,
        )

    def postprocess_detections(
        self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor], image_shapes: List[Tuple[int, int]]
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        boxes, scores, labels, valid = self.padded_detections(class_logits, box_regression, proposals, image_shapes)
        counts = valid.sum(1).tolist()
        return boxes[valid].split(counts), scores[valid].split(counts), labels[valid].split(counts)

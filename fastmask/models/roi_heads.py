"""torchvision's RoIHeads with its detection post-processing done for all images at once."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.models.detection import roi_heads as tv_roi_heads

from ._components import multi_image_nms
from ._script import renamed
from .batched import clip_boxes, gather_rows, large_enough

__all__ = ["RoIHeads"]

class RoIHeads(tv_roi_heads.RoIHeads):
    """``torchvision.models.detection.roi_heads.RoIHeads`` (same constructor, modules, losses), with
    ``postprocess_detections`` batched: the images' proposals are padded into ``[B, N]``, score
    threshold, empty-box removal and padding become one validity mask, and one
    ``multi_image_nms`` call does the class-wise NMS and top-k of every image. The detections
    equal torchvision's (same boxes, scores, labels, in the same order). In inference, each
    detection's mask logits are picked before the sigmoid (``forward``), so torchvision's
    ``roi_heads.maskrcnn_inference`` is not called there (patching it changes nothing)."""

    # torchvision's forward, for what forward leaves to it (TorchScript: no super()).
    _roi_heads_forward = renamed(tv_roi_heads.RoIHeads.forward, "_roi_heads_forward")

    def forward(self, features: Dict[str, Tensor], proposals: List[Tensor], image_shapes: List[Tuple[int, int]],
                targets: Optional[List[Dict[str, Tensor]]] = None) -> Tuple[List[Dict[str, Tensor]], Dict[str, Tensor]]:
        # The mask modules' None checks spelled out, not has_mask(): TorchScript then drops the
        # mask code below from a model without a mask branch (a patched Faster R-CNN), which it
        # could not compile (calls of None).
        if (self.training or targets is not None or self.has_keypoint() or self.mask_roi_pool is None
                or self.mask_head is None or self.mask_predictor is None):
            return self._roi_heads_forward(features, proposals, image_shapes, targets)
        # Mask R-CNN inference as torchvision's forward does it, but for the masks: its
        # maskrcnn_inference takes the sigmoid of every class's logits ([K, C, 28, 28]), then picks
        # each detection's class; picking first gives the same values (the sigmoid is elementwise)
        # for 1/C of the work.
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        rows = torch.arange(mask_logits.shape[0], device=mask_logits.device)
        masks = mask_logits[rows, torch.cat(labels)][:, None].sigmoid().split([len(x) for x in labels])
        result: List[Dict[str, Tensor]] = []
        for i in range(len(boxes)):
            result.append({"boxes": boxes[i], "labels": labels[i], "scores": scores[i], "masks": masks[i]})
        return result, {}

    def detect(self, class_logits: Tensor, box_regression: Tensor, proposals: Tensor, proposal_valid: Tensor,
               image_sizes: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Detections from padded inputs, no host sync: ``class_logits [B, N, C]``,
        ``box_regression [B, N, 4 C]``, ``proposals [B, N, 4]``, ``proposal_valid [B, N]``,
        ``image_sizes [B, 2]`` (h, w). Returns ``boxes [B, D, 4]``, ``scores [B, D]``,
        ``labels [B, D]``, ``valid [B, D]`` (bool), ``D = detections_per_img``, by decreasing score."""
        num_images, num_proposals, num_classes = class_logits.shape
        boxes = self.box_coder.decode_single(box_regression.reshape(-1, box_regression.shape[-1]),
                                             proposals.reshape(-1, 4))
        boxes = clip_boxes(boxes.view(num_images, num_proposals, num_classes, 4), image_sizes)
        scores = F.softmax(class_logits, -1)

        # Every (proposal, class) pair but the background is a candidate, proposal-major as in torchvision.
        boxes = boxes[:, :, 1:].reshape(num_images, -1, 4)
        scores = scores[:, :, 1:].reshape(num_images, -1)
        labels = torch.arange(1, num_classes, device=boxes.device).repeat(num_images, num_proposals)
        valid = proposal_valid.repeat_interleave(num_classes - 1, dim=1)
        # 1e-2: torchvision's remove_small_boxes threshold in RoIHeads.postprocess_detections.
        valid = valid & (scores > self.score_thresh) & large_enough(boxes, 1e-2)

        keep, _ = multi_image_nms(boxes, scores, self.nms_thresh, idxs=labels, valid=valid,
                                  max_output=self.detections_per_img)
        index = keep.clamp(min=0)
        return gather_rows(boxes, index), gather_rows(scores, index), gather_rows(labels, index), keep >= 0

    def postprocess_detections(
        self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor], image_shapes: List[Tuple[int, int]]
    ) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        sizes = [p.shape[0] for p in proposals]
        device = class_logits.device
        proposal_valid = torch.arange(max(sizes), device=device) < torch.tensor(sizes, device=device)[:, None]
        boxes, scores, labels, valid = self.detect(
            _pad(class_logits, sizes), _pad(box_regression, sizes), pad_sequence(proposals, batch_first=True),
            proposal_valid, torch.tensor([[h, w] for h, w in image_shapes], dtype=torch.int64, device=device))
        counts = torch.jit.annotate(List[int], valid.sum(1).tolist())
        return boxes[valid].split(counts), scores[valid].split(counts), labels[valid].split(counts)


def _pad(x: Tensor, sizes: List[int]) -> Tensor:
    """The rows of each image (``sizes`` of them, in order) as ``[B, max(sizes), ...]``, zero-padded."""
    return pad_sequence(x.split(sizes), batch_first=True)

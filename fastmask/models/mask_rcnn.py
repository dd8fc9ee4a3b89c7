"""Mask R-CNN on fastmask's ops: a drop-in for torchvision's, and the paper's ResNet-101 preset."""
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._utils import _ovewrite_value_param
from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection.anchor_utils import AnchorGenerator as _TvAnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor, _validate_trainable_layers
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as _TvRegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform as _TvGeneralizedRCNNTransform
from torchvision.models.resnet import ResNet50_Weights, ResNet101_Weights
from torchvision.ops import MultiScaleRoIAlign as _TvMultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from . import _components as components
from ._script import renamed
from .roi_heads import RoIHeads

__all__ = ["MaskRCNN", "maskrcnn_resnet_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet101_fpn", "patch_torchvision",
           "PAPER_PRESET"]

# The Mask R-CNN paper's settings (He et al. 2017, with FPN) where they differ from torchvision's
# defaults: short side 800, long side at most 1024, padded to a square of the long side (the
# batch is padded to a multiple of size_divisible, and no side exceeds max_size). torchvision's
# defaults already match the rest: FPN P2-P6 with P6 a stride-2 max-pool of P5, anchors 32-512
# with ratios 0.5/1/2 (3 per location and level), RPN NMS 0.7, 7x7 box and 14x14 mask RoIAlign
# (sampling ratio 2), 28x28 masks.
PAPER_PRESET: Dict[str, Any] = {"min_size": 800, "max_size": 1024}


def _pooler(pool: _TvMultiScaleRoIAlign) -> components.MultiScaleRoIAlign:
    return components.MultiScaleRoIAlign(pool.featmap_names, pool.output_size, pool.sampling_ratio,
                                         canonical_scale=pool.canonical_scale, canonical_level=pool.canonical_level)


def _transform(t: nn.Module) -> nn.Module:
    if type(t) is not _TvGeneralizedRCNNTransform or components.GeneralizedRCNNTransform is _TvGeneralizedRCNNTransform:
        return t
    return components.GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible,
                                               t.fixed_size, _skip_resize=t._skip_resize).train(t.training)


def _anchor_generator(a: nn.Module) -> nn.Module:
    if type(a) is not _TvAnchorGenerator or components.AnchorGenerator is _TvAnchorGenerator:
        return a
    return components.AnchorGenerator(a.sizes, a.aspect_ratios)


def _rpn(rpn: nn.Module) -> nn.Module:
    if type(rpn) is not _TvRegionProposalNetwork:
        return rpn
    anchors = _anchor_generator(rpn.anchor_generator)
    if components.RegionProposalNetwork is _TvRegionProposalNetwork:
        rpn.anchor_generator = anchors
        return rpn
    new = components.RegionProposalNetwork(
        anchors, rpn.head, rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold,
        rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction,
        dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n), rpn.nms_thresh, rpn.score_thresh,
    )
    new.min_size = rpn.min_size
    return new.train(rpn.training)


def patch_torchvision(model: GeneralizedRCNN) -> GeneralizedRCNN:
    """Swap fastmask's ops into a torchvision detection model (Faster/Mask/Keypoint R-CNN), in
    place: the multi-level RoIAligns, the batched detection post-processing, and the transform,
    anchors and RPN where fastmask provides them. Parameters, buffers and outputs are unchanged.
    Returns ``model``."""
    if not isinstance(model, GeneralizedRCNN):
        raise TypeError(f"model must be a torchvision GeneralizedRCNN (Faster/Mask/Keypoint R-CNN), got {type(model).__name__}")
    model.transform = _transform(model.transform)
    model.rpn = _rpn(model.rpn)
    heads = model.roi_heads
    for name in ("box_roi_pool", "mask_roi_pool", "keypoint_roi_pool"):
        pool = getattr(heads, name, None)
        if type(pool) is _TvMultiScaleRoIAlign:
            setattr(heads, name, _pooler(pool))
    if type(heads) is tv_roi_heads.RoIHeads:
        heads.__class__ = RoIHeads  # only overrides methods: no state to convert
    return model


def _check_inputs(images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]], training: bool, channels: int) -> None:
    if isinstance(images, Tensor) or not isinstance(images, (list, tuple)):
        raise TypeError(f"images must be a list of [C, H, W] tensors, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images must not be empty")
    for i, img in enumerate(images):
        if not isinstance(img, Tensor):
            raise TypeError(f"images[{i}] must be a Tensor, got {type(img).__name__}")
        if img.dim() != 3 or img.shape[0] != channels:
            raise ValueError(f"images[{i}] must be a [{channels}, H, W] tensor, got shape {tuple(img.shape)}")
        if not img.is_floating_point():
            raise TypeError(f"images[{i}] must be floating point (values in [0, 1]), got {img.dtype}")
        if img.shape[1] == 0 or img.shape[2] == 0:
            raise ValueError(f"images[{i}] is empty: shape {tuple(img.shape)}")
    if targets is None:
        if training:
            raise ValueError("targets are required in training mode")
        return
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets must be a list of one dict per image ({len(images)}), got {type(targets).__name__}"
                         + (f" of length {len(targets)}" if isinstance(targets, (list, tuple)) else ""))
    for i, (img, t) in enumerate(zip(images, targets)):
        for key in ("boxes", "labels", "masks"):
            if key not in t:
                raise ValueError(f"targets[{i}] has no {key!r}")
        boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be [N, 4], got shape {tuple(boxes.shape)}")
        n = boxes.shape[0]
        if labels.shape != (n,):
            raise ValueError(f"targets[{i}]['labels'] must be [N] = [{n}] like its boxes, got shape {tuple(labels.shape)}")
        if masks.dim() != 3 or masks.shape[0] != n or tuple(masks.shape[1:]) != tuple(img.shape[1:]):
            raise ValueError(f"targets[{i}]['masks'] must be [N, H, W] = [{n}, {img.shape[1]}, {img.shape[2]}] "
                             f"(one mask per box, the image's size), got shape {tuple(masks.shape)}")


class MaskRCNN(tv_mask_rcnn.MaskRCNN):
    """``torchvision.models.detection.MaskRCNN`` on fastmask's ops: same constructor, module names,
    ``state_dict`` keys, outputs and losses. Also accepts fastmask's ``MultiScaleRoIAlign`` as
    ``box_roi_pool`` / ``mask_roi_pool``, and checks its inputs with clear errors."""

    def __init__(self, backbone: nn.Module, num_classes: Optional[int] = None, **kwargs: Any):
        # torchvision type-checks the poolers against its own class: fastmask's go in afterwards.
        own_poolers = {k: kwargs.pop(k) for k in ("box_roi_pool", "mask_roi_pool")
                       if isinstance(kwargs.get(k), components.MultiScaleRoIAlign)}
        super().__init__(backbone, num_classes, **kwargs)
        patch_torchvision(self)
        for name, pool in own_poolers.items():
            setattr(self.roi_heads, name, pool)
        # forward_static normalises with these (they follow .to(device); not in the state dict).
        for name, values in (("_static_mean", self.transform.image_mean), ("_static_std", self.transform.image_std)):
            self.register_buffer(name, torch.tensor(values).view(-1, 1, 1), persistent=False)

    # GeneralizedRCNN's forward, for forward below (TorchScript: no super()).
    _generalized_rcnn_forward = renamed(GeneralizedRCNN.forward, "_generalized_rcnn_forward")

    def forward(self, images: List[Tensor], targets: Optional[List[Dict[str, Tensor]]] = None):
        if not torch.jit.is_scripting():
            _check_inputs(images, targets, self.training, len(self.transform.image_mean))
        return self._generalized_rcnn_forward(images, targets)

    @torch.jit.export
    def forward_static(self, images: Tensor, image_sizes: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Inference with static shapes and no host synchronisation, so the whole call can be
        captured in a CUDA graph or compiled with ``torch.compile(fullgraph=True)``.

        Args:
            images: ``[B, 3, H, W]`` in [0, 1], already at the network's input size (resized and
                zero-padded by the caller, e.g. to 1024 x 1024 for the paper preset; H and W
                multiples of 32). Normalised here; not resized.
            image_sizes: optional ``[B, 2]`` (h, w) of each image before padding, for clipping
                (default: H, W).

        Returns a dict of fixed-size tensors (``D = box_detections_per_img``, by decreasing
        score): ``boxes [B, D, 4]`` (in ``images``' coordinates), ``scores [B, D]``, ``labels
        [B, D]``, ``masks [B, D, 28, 28]`` (mask probabilities inside each box: paste them into
        the image with ``paste_masks_in_image``), ``valid [B, D]`` (bool: which rows are
        detections). The valid rows equal ``forward``'s detections for images that ``forward``
        would not resize.
        """
        if self.training:
            raise RuntimeError("forward_static is for inference: call model.eval() first")
        if not torch.jit.is_scripting():
            _check_static_images(images, len(self.transform.image_mean))
        num_images, _, height, width = images.shape
        padded = image_sizes is not None
        if image_sizes is None:  # made on the device: no host-to-device copy (CUDA graphs)
            image_sizes = torch.full((num_images, 2), height, dtype=torch.int64, device=images.device)
            image_sizes[:, 1] = width
        elif image_sizes.device != images.device:
            raise ValueError(f"image_sizes is on {image_sizes.device} but images is on {images.device}")
        # As the transform normalises, from buffers already on the device (no host-to-device copy).
        x = (images - self._static_mean.to(images.dtype)) / self._static_std.to(images.dtype)
        if padded:
            # The transform pads after normalising: zeros outside each image, whatever the
            # caller's canvas holds there (a zero-padded canvas normalises to -mean / std).
            rows = torch.arange(height, device=x.device)[None, :, None] < image_sizes[:, 0, None, None]
            cols = torch.arange(width, device=x.device)[None, None, :] < image_sizes[:, 1, None, None]
            x = x.masked_fill(~(rows & cols)[:, None], 0.0)
        shapes = [(height, width)] * num_images
        features = self.backbone(x)
        feature_maps = list(features.values())
        objectness, deltas = self.rpn.head(feature_maps)
        proposals, _, counts = self.rpn.propose(ImageList(x, shapes), feature_maps, objectness, deltas, image_sizes)
        proposal_valid = torch.arange(proposals.shape[1], device=proposals.device) < counts[:, None]

        heads = self.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(features, list(proposals.unbind(0)), shapes))
        class_logits, box_regression = heads.box_predictor(box_features)
        boxes, scores, labels, valid = heads.detect(class_logits.view(num_images, proposals.shape[1], -1),
                                                    box_regression.view(num_images, proposals.shape[1], -1),
                                                    proposals, proposal_valid, image_sizes)
        mask_features = heads.mask_head(heads.mask_roi_pool(features, list(boxes.unbind(0)), shapes))
        mask_logits = heads.mask_predictor(mask_features)  # [B D, C, M, M]
        mask_size = mask_logits.shape[-2:]
        mask_logits = mask_logits.view([num_images, boxes.shape[1]] + list(mask_logits.shape[1:]))
        index = labels[:, :, None, None, None].expand(-1, -1, 1, mask_size[0], mask_size[1])
        masks = mask_logits.gather(2, index).squeeze(2).sigmoid()
        return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks, "valid": valid}


def _check_static_images(images, channels: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != channels:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [B, {channels}, H, W] tensor, got {shape}")


def maskrcnn_resnet_fpn(depth: str, weights=None, progress: bool = True, num_classes: Optional[int] = None,
                        weights_backbone=None, trainable_backbone_layers: Optional[int] = None,
                        **kwargs: Any) -> MaskRCNN:
    """torchvision's maskrcnn_resnet50_fpn recipe for any ResNet (``depth``: "resnet18",
    "resnet34", "resnet50", "resnet101", "resnet152"); e.g. a light model for small data."""
    if depth not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        raise ValueError(f"depth must be one of resnet18/34/50/101/152, got {depth!r}")
    if weights is not None:
        weights_backbone = None
        num_classes = _ovewrite_value_param("num_classes", num_classes, len(weights.meta["categories"]))
    elif num_classes is None:
        num_classes = 91
    is_trained = weights is not None or weights_backbone is not None
    trainable_backbone_layers = _validate_trainable_layers(is_trained, trainable_backbone_layers, 5, 3)
    norm_layer = FrozenBatchNorm2d if is_trained else nn.BatchNorm2d
    backbone = getattr(resnet, depth)(weights=weights_backbone, progress=progress, norm_layer=norm_layer)
    model = MaskRCNN(_resnet_fpn_extractor(backbone, trainable_backbone_layers), num_classes=num_classes, **kwargs)
    if weights is not None:
        model.load_state_dict(weights.get_state_dict(progress=progress, check_hash=True))
        if weights == tv_mask_rcnn.MaskRCNN_ResNet50_FPN_Weights.COCO_V1:
            tv_mask_rcnn.overwrite_eps(model, 0.0)
    return model


def maskrcnn_resnet50_fpn(
    *,
    weights: Optional[tv_mask_rcnn.MaskRCNN_ResNet50_FPN_Weights] = None,
    progress: bool = True,
    num_classes: Optional[int] = None,
    weights_backbone: Optional[ResNet50_Weights] = ResNet50_Weights.IMAGENET1K_V1,
    trainable_backbone_layers: Optional[int] = None,
    **kwargs: Any,
) -> MaskRCNN:
    """``torchvision.models.detection.maskrcnn_resnet50_fpn`` on fastmask's ops: same arguments,
    same weights (``weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` loads torchvision's
    checkpoint), same outputs."""
    weights = tv_mask_rcnn.MaskRCNN_ResNet50_FPN_Weights.verify(weights)
    weights_backbone = ResNet50_Weights.verify(weights_backbone)
    return maskrcnn_resnet_fpn("resnet50", weights, progress, num_classes, weights_backbone,
                                trainable_backbone_layers, **kwargs)


def maskrcnn_resnet101_fpn(
    *,
    weights: None = None,
    progress: bool = True,
    num_classes: Optional[int] = None,
    weights_backbone: Optional[ResNet101_Weights] = ResNet101_Weights.IMAGENET1K_V1,
    trainable_backbone_layers: Optional[int] = None,
    **kwargs: Any,
) -> MaskRCNN:
    """The Mask R-CNN paper's model: ResNet-101 C2-C5, FPN P2-P6, 3 anchors per location and level,
    RPN NMS 0.7, 7x7 box and 14x14 mask RoIAlign, 28x28 masks; images resized to a short side of
    800 and a long side of at most 1024, zero-padded to 1024x1024 (see ``PAPER_PRESET``). Keyword
    arguments override it as in ``maskrcnn_resnet50_fpn`` (padding follows ``max_size``). There
    are no pretrained weights of this model: ``weights`` must be None."""
    if weights is not None:
        raise ValueError("weights: there are no pretrained ResNet-101 Mask R-CNN weights; "
                         "use weights_backbone (ImageNet ResNet-101) and train")
    weights_backbone = ResNet101_Weights.verify(weights_backbone)
    kwargs = {**PAPER_PRESET, **kwargs}
    kwargs.setdefault("size_divisible", kwargs["max_size"])
    # Fixed level scales: on the square canvas, inferring them from the images' heights (as
    # torchvision does) doubles them for images wider than ~1.4:1.
    levels, scales = ["0", "1", "2", "3"], [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    kwargs.setdefault("box_roi_pool", components.MultiScaleRoIAlign(levels, 7, 2, scales=scales))
    kwargs.setdefault("mask_roi_pool", components.MultiScaleRoIAlign(levels, 14, 2, scales=scales))
    return maskrcnn_resnet_fpn("resnet101", None, progress, num_classes, weights_backbone,
                                trainable_backbone_layers, **kwargs)

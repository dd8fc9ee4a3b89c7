"""Mask R-CNN on fastmask's ops (needs torchvision)."""
from .mask_rcnn import (PAPER_PRESET, MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet101_fpn, maskrcnn_resnet_fpn,
                        patch_torchvision)
from ._components import paste_masks_in_image
from .inference import fold_conv_batchnorm, optimize_for_inference
from .roi_heads import RoIHeads

__all__ = ["MaskRCNN", "RoIHeads", "maskrcnn_resnet_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet101_fpn",
           "patch_torchvision", "paste_masks_in_image", "PAPER_PRESET", "optimize_for_inference",
           "fold_conv_batchnorm"]

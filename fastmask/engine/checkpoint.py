"""Model configurations and checkpoints: what ``fastmask train`` saves and the other commands load."""
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..models import MaskRCNN, maskrcnn_resnet101_fpn, maskrcnn_resnet_fpn

__all__ = ["ARCHS", "build_model", "save_checkpoint", "load_checkpoint"]

# "paper": the Mask R-CNN paper preset (ResNet-101, 800/1024, square padding); the others:
# torchvision's maskrcnn_resnet50_fpn recipe with that ResNet.
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "paper")


def build_model(arch: str, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """A Mask R-CNN without pretrained weights (``kwargs``: MaskRCNN keyword arguments)."""
    if arch == "paper":
        return maskrcnn_resnet101_fpn(weights_backbone=None, num_classes=num_classes, **kwargs)
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return maskrcnn_resnet_fpn(arch, num_classes=num_classes, **kwargs)


def save_checkpoint(path: str, model: nn.Module, config: Dict[str, Any], **state: Any) -> None:
    """``model``'s state_dict (unwrapped from DDP), the config that rebuilds it, and any training
    state (optimizer, scheduler, iteration, ...). Written to a temporary file, then renamed, so an
    interrupted save never leaves a broken checkpoint."""
    model = getattr(model, "module", model)
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "config": config, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, config: Optional[Dict[str, Any]] = None,
                    map_location: str = "cpu") -> Tuple[MaskRCNN, Dict[str, Any], Dict[str, Any]]:
    """``(model, config, checkpoint)`` from a fastmask checkpoint, or from a bare state_dict (a
    torchvision Mask R-CNN checkpoint: ``arch`` defaults to resnet50 and ``num_classes`` is read
    from the box predictor). ``config`` overrides what the file says."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if "model" in checkpoint and "config" in checkpoint:
        state, saved = checkpoint["model"], checkpoint["config"]
    else:
        state, checkpoint = checkpoint, {}
        key = "roi_heads.box_predictor.cls_score.weight"
        if key not in state:
            raise ValueError(f"{path} is neither a fastmask checkpoint nor a Mask R-CNN state_dict (no {key})")
        saved = {"arch": "resnet50", "num_classes": state[key].shape[0], "kwargs": {}}
    config = {**saved, **(config or {})}
    model = build_model(config["arch"], config["num_classes"], **config.get("kwargs", {}))
    if not checkpoint and not any(k.startswith("backbone.") and k.endswith("num_batches_tracked") for k in state):
        _freeze_batch_norm(model.backbone)
    model.load_state_dict(state)
    return model, config, checkpoint


def _freeze_batch_norm(module: nn.Module) -> None:
    """torchvision's pretrained detection models: FrozenBatchNorm2d with eps 0 (its
    ``overwrite_eps``); a state_dict without ``num_batches_tracked`` in the backbone comes from one."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=0.0))
        else:
            _freeze_batch_norm(child)

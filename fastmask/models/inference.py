"""Fast inference for a detection model: batch norms folded into their convolutions, channels_last
convolutions, and the networks in bfloat16/float16 while every box is computed in float32."""
import copy
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.anchor_utils import AnchorGenerator as _TvAnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import MultiScaleRoIAlign as _TvMultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from . import _components as components

__all__ = ["optimize_for_inference", "fold_conv_batchnorm"]

# The precisions by their command-line names (fastmask.cli, export).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# torchvision's ResNet blocks and stem: each (conv, norm) pair runs back to back in their forward.
_BLOCK_PAIRS: Dict[type, Tuple[Tuple[str, str], ...]] = {
    resnet.Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    resnet.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    resnet.ResNet: (("conv1", "bn1"),),
}


def _runs_in_order(module: nn.Module) -> bool:
    """Whether ``module`` calls its children one after the other, each on the previous one's output."""
    forward = type(module).forward
    return forward is nn.Sequential.forward or forward is IntermediateLayerGetter.forward


def _conv_norm_pairs(module: nn.Module) -> List[Tuple[str, str]]:
    """The names of ``module``'s children (conv, norm) where the norm takes the conv's output and
    nothing else sees that output."""
    if _runs_in_order(module):
        names = list(module._modules)
        returned = getattr(module, "return_layers", {})  # IntermediateLayerGetter's outputs
        return [(a, b) for a, b in zip(names, names[1:]) if a not in returned]
    for block, pairs in _BLOCK_PAIRS.items():
        if type(module).forward is block.forward:  # a subclass with its own forward may use them otherwise
            return [p for p in pairs if p[0] in module._modules and p[1] in module._modules]
    return []


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    if type(conv) is not nn.Conv2d:
        return False
    if type(norm) is nn.BatchNorm2d:
        # Without running statistics (or in training) a batch norm normalises with the batch's.
        if norm.training or norm.running_mean is None:
            return False
    elif type(norm) is not FrozenBatchNorm2d:
        return False
    return norm.running_mean.numel() == conv.out_channels


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    """``norm(conv(x))`` as one convolution: ``weight * scale`` and ``(bias - mean) * scale + beta``
    per output channel, with ``scale = gamma / sqrt(var + eps)``, computed in float64."""
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    conv.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    bias = ((bias - mean) * scale + beta).to(conv.weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(bias)


def fold_conv_batchnorm(model: nn.Module) -> int:
    """Folds, in place, every batch norm that directly follows a ``Conv2d`` into that convolution
    and replaces it by ``nn.Identity``: torchvision's ``FrozenBatchNorm2d``, and ``BatchNorm2d`` in
    eval mode with running statistics. "Directly follows" is read from the module structure:
    consecutive children of an ``nn.Sequential`` (e.g. ResNet's ``downsample``, torchvision's
    ``Conv2dNormActivation`` in FPNs and heads) or of the backbone's ``IntermediateLayerGetter``
    (ResNet's stem ``conv1``/``bn1``; not a conv whose output the getter returns), and
    ``convN``/``bnN`` in torchvision's ``Bottleneck``, ``BasicBlock`` and ``ResNet``. Returns the
    number of batch norms folded. The model computes the same function (up to rounding) in eval
    mode only: training would no longer update or use batch statistics."""
    uses: Dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    # A convolution used in more than one place may not be followed by the norm in the others.
    pairs = [(parent, conv, norm) for parent in model.modules() for conv, norm in _conv_norm_pairs(parent)
             if _foldable(parent._modules[conv], parent._modules[norm]) and uses[id(parent._modules[conv])] == 1]
    for parent, conv, norm in pairs:
        _fold(parent._modules[conv], parent._modules[norm])
        parent._modules[norm] = nn.Identity()
    return len(pairs)


def _cast(x: Any, dtype: torch.dtype, channels_last: bool) -> Any:
    """``x``'s floating tensors (in tuples, lists and dicts too) in ``dtype``, 4-d ones
    channels_last if asked."""
    if isinstance(x, Tensor):
        if not x.is_floating_point():
            return x
        if channels_last and x.dim() == 4:
            return x.to(dtype=dtype, memory_format=torch.channels_last)
        return x.to(dtype)
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):  # not a named tuple
        return type(x)(_cast(v, dtype, channels_last) for v in x)
    if isinstance(x, dict):
        return type(x)((k, _cast(v, dtype, channels_last)) for k, v in x.items())
    return x


class _CastInputs:
    """Forward pre-hook of a network part: its floating inputs in the part's dtype (and layout)."""

    def __init__(self, dtype: torch.dtype, channels_last: bool):
        self.dtype, self.channels_last = dtype, channels_last

    def __call__(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return _cast(args, self.dtype, self.channels_last)


class _Float32Outputs:
    """Forward hook of a head: its floating outputs in float32, for the box arithmetic after it."""

    def __call__(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        return _cast(output, torch.float32, False)


def _remove_cast_hooks(model: nn.Module) -> None:
    """Drops the hooks an earlier ``optimize_for_inference`` added (they survive ``deepcopy``)."""
    for m in model.modules():
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, (_CastInputs, _Float32Outputs))]:
                del hooks[key]


class _Float32CellAnchors:
    """An anchor generator whose cell anchors stay float32 whatever the features' dtype (both
    RPNs set them to ``features[0].dtype``), so that no anchor is rounded to bf16/fp16."""

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        super().set_cell_anchors(torch.float32, device)


class _FastmaskFloat32Anchors(_Float32CellAnchors, components.AnchorGenerator):
    pass


class _TorchvisionFloat32Anchors(_Float32CellAnchors, _TvAnchorGenerator):
    pass


_FLOAT32_ANCHORS = {_TvAnchorGenerator: _TorchvisionFloat32Anchors, components.AnchorGenerator: _FastmaskFloat32Anchors}


def _pin_anchors_to_float32(rpn: nn.Module) -> None:
    generator = rpn.anchor_generator
    if isinstance(generator, _Float32CellAnchors):
        return
    if type(generator) not in _FLOAT32_ANCHORS:
        raise TypeError(f"model.rpn.anchor_generator is a {type(generator).__name__}: low precision needs fastmask's "
                        "or torchvision's AnchorGenerator, whose anchors can be kept in float32")
    # Made afresh: a call in low precision (e.g. under autocast) may have rounded the current ones.
    generator.cell_anchors = [generator.generate_anchors(s, r, torch.float32, c.device)
                              for s, r, c in zip(generator.sizes, generator.aspect_ratios, generator.cell_anchors)]
    generator.__class__ = _FLOAT32_ANCHORS[type(generator)]  # only overrides a method: no state to convert


def _network_parts(model: GeneralizedRCNN) -> List[Tuple[str, nn.Module, bool]]:
    """(name, module, whether its outputs feed box arithmetic) of the model's networks, in order."""
    parts = [("backbone", model.backbone, False), ("rpn.head", model.rpn.head, True)]
    heads = model.roi_heads
    for head, predictor in (("box_head", "box_predictor"), ("mask_head", "mask_predictor"),
                            ("keypoint_head", "keypoint_predictor")):
        if getattr(heads, head, None) is not None:
            parts += [(f"roi_heads.{head}", getattr(heads, head), False),
                      (f"roi_heads.{predictor}", getattr(heads, predictor), True)]
    return parts


def optimize_for_inference(model: GeneralizedRCNN, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True,
                           fold_batchnorm: bool = True, inplace: bool = False) -> GeneralizedRCNN:
    """A detection model (fastmask's ``MaskRCNN``, or a torchvision Faster/Mask/Keypoint R-CNN;
    for bf16/fp16 one after ``patch_torchvision``, whose RoIAlign takes low-precision features
    with float32 boxes) made ready for fast inference, in eval mode. Returns a
    deep copy (``model`` is unchanged) unless ``inplace``, which modifies and returns ``model``
    (saves the copy's memory). Use the result for inference only: ``forward`` and
    ``forward_static`` as before (eager, or ``torch.compile``, which traces the casts; not
    TorchScript: they are Python forward hooks), on CPU or CUDA (``.to(device)`` before or after:
    it keeps the dtypes). Calling it again on its result replaces the hooks, but the weights keep
    the earlier rounding and layout: to change the precision, start from the original model.

    - ``fold_batchnorm``: every batch norm directly following a convolution is folded into it
      (see ``fold_conv_batchnorm``): ResNet's ``FrozenBatchNorm2d`` (or ``BatchNorm2d``), and those of
      the FPN and heads where there are any. The state dict changes accordingly (no norm keys,
      convolution biases).
    - ``channels_last``: the networks' 4-d weights and the backbone's input in channels_last,
      which oneDNN (CPU) and cuDNN (CUDA) convolutions run faster; features, RoIAlign and the
      mask head's convolutions then stay channels_last.
    - ``dtype`` (``torch.float32``, ``torch.bfloat16`` or ``torch.float16``): the networks run in
      it: the backbone (with FPN), the RPN head, the box, mask (and keypoint) heads and
      predictors. Their weights are converted (as ``.to(dtype)``), each part casts its floating
      inputs to ``dtype`` on entry (so images stay float32 and the transform normalises and
      resizes them as before), and the RPN head and the predictors return float32 (objectness,
      box deltas, class logits, box regression, mask logits). So proposal scores, anchors (kept
      float32), box decoding and clipping, NMS, softmax scores, mask sigmoid and mask pasting
      are float32, as in the float32 model: rounding in low precision changes the heads' values
      but never rounds a box coordinate or score that NMS compares. RoIAlign pools the bf16/fp16
      features at the float32 boxes, accumulating in float32.

    Why converted weights rather than ``torch.autocast``: the same code runs on CPU and CUDA,
    callers need no autocast context, weights are not recast on every call, and RoIAlign reads
    the low-precision features directly (under autocast it copies every FPN level to float32,
    twice per image batch, before pooling); unfolded ``FrozenBatchNorm2d`` would also turn
    autocast's bf16 activations back into float32 (its statistics are float32 buffers). Measured
    on a 2-core AMX CPU (R50-FPN, images 480x640 and 600x800, folded, channels_last): 4.3-4.8 s
    with bf16 weights against 5.2-5.4 s under ``torch.autocast("cpu", torch.bfloat16)``.
    float16 can overflow where bfloat16 cannot (float16's largest value is 65504): a folded
    weight that does not fit is a ValueError (raised before any conversion; an ``inplace`` model
    is then already folded and in eval mode); activations that overflow are not checked. On a CPU
    without native bf16/fp16 support (AVX-512 BF16 / AMX, AVX-512 FP16) oneDNN emulates them:
    correct, but possibly slower than float32.
    """
    if not isinstance(model, GeneralizedRCNN):
        raise TypeError("model must be a fastmask MaskRCNN or a torchvision GeneralizedRCNN (Faster/Mask/Keypoint "
                        f"R-CNN), got {type(model).__name__}")
    if dtype not in PRECISIONS.values():
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
    low_precision = dtype != torch.float32
    if low_precision:
        heads = model.roi_heads
        for name in ("box_roi_pool", "mask_roi_pool", "keypoint_roi_pool"):
            if isinstance(getattr(heads, name, None), _TvMultiScaleRoIAlign):
                raise TypeError(f"model.roi_heads.{name} is torchvision's MultiScaleRoIAlign, whose RoIAlign needs "
                                f"features and boxes of one dtype: call fastmask.models.patch_torchvision(model) "
                                f"before optimize_for_inference(..., dtype={dtype})")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    _remove_cast_hooks(model)
    if fold_batchnorm:
        fold_conv_batchnorm(model)
    parts = _network_parts(model)
    for name, part, _ in parts:  # before any conversion
        for param_name, param in part.named_parameters():
            if not bool(torch.isfinite(param.to(dtype)).all()):
                hint = " (float16's range is too small: use torch.bfloat16)" if dtype == torch.float16 else ""
                raise ValueError(f"{name}.{param_name} has infinite or NaN values after batch-norm folding and "
                                 f"conversion to {dtype}{hint}")
    for _, part, feeds_boxes in parts:
        part.to(dtype=dtype)
        if channels_last:
            part.to(memory_format=torch.channels_last)
        if low_precision or channels_last:
            part.register_forward_pre_hook(_CastInputs(dtype, channels_last))
        if low_precision and feeds_boxes:
            part.register_forward_hook(_Float32Outputs())
    if low_precision:
        _pin_anchors_to_float32(model.rpn)
    return model

"""Fast inference for a detection model: batch norms folded into their convolutions, channels_last
convolutions, the networks in bfloat16/float16 (or an int8 backbone) while every box is computed in
float32, and the networks compiled by Inductor."""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
        cast = x.copy()  # of x's type (an OrderedDict: Dynamo cannot trace making one from pairs)
        for key, value in x.items():
            cast[key] = _cast(value, dtype, channels_last)
        return cast
    return x


class _CastInputs:
    """Forward pre-hook of a network part: its floating inputs in the part's dtype (and layout)."""

    def __init__(self, dtype: torch.dtype, channels_last: bool):
        self.dtype, self.channels_last = dtype, channels_last

    def __call__(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return _cast(args, self.dtype, self.channels_last)


class _CastOutputs:
    """Forward hook of a network part: its floating outputs in ``dtype`` (float32 for a head whose
    outputs feed box arithmetic; bf16 for the int8 backbone's features)."""

    def __init__(self, dtype: torch.dtype, channels_last: bool = False):
        self.dtype, self.channels_last = dtype, channels_last

    def __call__(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        return _cast(output, self.dtype, self.channels_last)


def _reset(model: nn.Module) -> None:
    """Drops the hooks and compiled calls an earlier ``optimize_for_inference`` added (they survive
    ``deepcopy``, and a copy's compiled calls would run the original's modules)."""
    for m in model.modules():
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, (_CastInputs, _CastOutputs))]:
                del hooks[key]
        m._compiled_call_impl = None


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


def _compile(name: str, part: nn.Module, autocast: Optional[torch.dtype] = None) -> None:
    """Makes ``part``'s calls (its forward and its cast hooks, in one graph) run compiled by
    Inductor with freezing: the weights become constants, so on the CPU each convolution's and
    linear layer's weights are prepacked for oneDNN, the ReLU and the residual addition after a
    convolution run as its oneDNN post-ops, and the other elementwise work is fused into generated
    loops. Compiled at the first call for its shapes, and again the first time a dimension takes
    another value, with that dimension dynamic from then on (torch.compile's default). ``autocast``:
    the graph is traced and run under CPU autocast to that dtype."""

    def call(*args: Any) -> Any:
        return part._call_impl(*args)  # the hooks and forward, traced as one

    # A code object of its own, named after the part: Dynamo keeps its compiled graphs, and counts
    # recompilations against its limit (8), per code object, which the parts would otherwise share.
    call.__code__ = call.__code__.replace(co_name=name)
    compiled = torch.compile(call)

    def run(*args: Any) -> Any:
        # Inductor freezes only graphs compiled without autograd, and only with freezing on from
        # Dynamo's trace on (torch.compile(options={"freezing": True}) comes too late: nothing fused).
        with torch.no_grad(), torch._inductor.config.patch(freezing=True), \
                torch.autocast("cpu", autocast or torch.bfloat16, enabled=autocast is not None):
            return compiled(*args)

    part._compiled_call_impl = run  # what nn.Module.compile sets: the module's __call__ runs it


def _quantized_backbone(model: GeneralizedRCNN, calibration: Sequence[Tensor]) -> nn.Module:
    """``model.backbone`` (float32) statically quantized to int8 by PyTorch 2 export quantization
    (PT2E) with the X86 Inductor quantizer: activations per tensor (uint8, ranges from histograms
    of the calibration images' activations), weights per output channel (int8). Returns the
    converted graph (quantize/dequantize around each convolution, in float32), which Inductor
    (``_compile``) lowers to oneDNN int8 convolutions (AMX or VNNI) with fused ReLU and additions."""
    try:
        from torchao.quantization.pt2e import allow_exported_model_train_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as e:
        raise ImportError("dtype=torch.int8 needs torchao (pip install torchao), where PyTorch's export quantization "
                          "(prepare_pt2e, convert_pt2e, X86InductorQuantizer) lives now") from e
    images = list(calibration)
    with torch.no_grad():
        # The backbone's inputs as the model makes them: normalised, resized, padded. Two images, so
        # that export does not fix the batch size to 1; batch, height and width are dynamic.
        example = model.transform((images * 2)[:2])[0].tensors
        auto = torch.export.Dim.AUTO
        # strict (Dynamo's trace) tells each call of a module apart: a ResNet block calls its one
        # ReLU module twice or three times, which the quantizer must see as separate ReLUs.
        program = torch.export.export(model.backbone, (example,), dynamic_shapes=({0: auto, 2: auto, 3: auto},),
                                      strict=True)
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(program.module(), quantizer)
        for image in images:
            prepared(model.transform([image])[0].tensors)
        converted = convert_pt2e(prepared)
    # An exported graph refuses .train() and .eval() (as the model's own calls them) unless allowed.
    # Put in eval mode now: later .eval() calls then leave its code, and so its compilation, as it is.
    allow_exported_model_train_eval(converted).eval()
    return converted


def optimize_for_inference(model: GeneralizedRCNN, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True,
                           fold_batchnorm: bool = True, inplace: bool = False, compile: Optional[bool] = None,
                           calibration: Optional[Sequence[Tensor]] = None) -> GeneralizedRCNN:
    """A detection model (fastmask's ``MaskRCNN``, or a torchvision Faster/Mask/Keypoint R-CNN;
    for bf16/fp16 one after ``patch_torchvision``, whose RoIAlign takes low-precision features
    with float32 boxes) made ready for fast inference, in eval mode. Returns a
    deep copy (``model`` is unchanged) unless ``inplace``, which modifies and returns ``model``
    (saves the copy's memory). Use the result for inference only: ``forward`` and
    ``forward_static`` as before (eager, or, unless compiled here, ``torch.compile``, which traces
    the casts; not TorchScript: they are Python forward hooks), on CPU or CUDA (``.to(device)``
    before or after: it keeps the dtypes). Calling it again on its result replaces the hooks and
    compiled calls, but the weights keep the earlier rounding and layout: to change the precision,
    start from the original model.

    - ``fold_batchnorm``: every batch norm directly following a convolution is folded into it
      (see ``fold_conv_batchnorm``): ResNet's ``FrozenBatchNorm2d`` (or ``BatchNorm2d``), and those of
      the FPN and heads where there are any. The state dict changes accordingly (no norm keys,
      convolution biases).
    - ``channels_last``: the networks' 4-d weights and the backbone's input in channels_last,
      which oneDNN (CPU) and cuDNN (CUDA) convolutions run faster; features, RoIAlign and the
      mask head's convolutions then stay channels_last.
    - ``dtype`` (``torch.float32``, ``torch.bfloat16``, ``torch.float16`` or ``torch.int8``): the
      networks run in it: the backbone (with FPN), the RPN head, the box, mask (and keypoint) heads and
      predictors. Their weights are converted (as ``.to(dtype)``), each part casts its floating
      inputs to ``dtype`` on entry (so images stay float32 and the transform normalises and
      resizes them as before), and the RPN head and the predictors return float32 (objectness,
      box deltas, class logits, box regression, mask logits). So proposal scores, anchors (kept
      float32), box decoding and clipping, NMS, softmax scores, mask sigmoid and mask pasting
      are float32, as in the float32 model: rounding in low precision changes the heads' values
      but never rounds a box coordinate or score that NMS compares. RoIAlign pools the bf16/fp16
      features at the float32 boxes, accumulating in float32.
    - ``dtype=torch.int8`` (CPU only; needs torchao, and ``calibration``: a list of images as
      the model takes them, ``[3, H, W]`` floats in [0, 1], e.g. 32 training images): the backbone
      with FPN is statically quantized (``_quantized_backbone``: int8 weights per channel, uint8
      activations per tensor, their ranges calibrated on those images; batch norms folded first
      unless ``fold_batchnorm=False``), its features returned in bfloat16; the RPN head, box and
      mask heads run in bfloat16 as with ``dtype=torch.bfloat16``; boxes, scores, NMS and masks
      stay float32. The backbone is exported once for any batch and image size (``torch.export``
      with dynamic dimensions; sizes so small that a feature map is 1 pixel wide may be fixed to
      the calibration images'). The state dict is the quantized graph's, not the model's. Only
      Inductor turns the quantized graph into int8 kernels: int8 compiles unless ``compile=False``,
      which runs it as it is, quantized values in float arithmetic (slower than float32; needs no
      C++ compiler: for checking the quantization's accuracy). Compiled, the backbone runs under
      bf16 autocast: the int8 convolutions return bf16, and the FPN adds in bf16.
    - ``compile`` (default: for int8 only): each network part (the list under ``dtype``) runs
      compiled by Inductor with freezing (``_compile``): on the CPU its convolutions run with
      their ReLU and residual addition fused (oneDNN post-ops) on prepacked weights. Only the
      networks are compiled: the transform, anchors, box arithmetic, NMS, RoIAlign and mask
      pasting run as before, in float32, and ``forward`` and ``forward_static`` both use the
      compiled parts (call them as they are; not under ``torch.compile`` again). Needs a C++
      compiler. Each part compiles at its first call, and again the first time a dimension of
      its inputs takes another value (batch size, padded image height or width; the heads' box
      counts), with that dimension dynamic from then on: later sizes reuse those graphs. R50-FPN
      compiles in 10-35 s on 2 cores; Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by
      default ``torchinductor_$USER`` under ``$TMPDIR``, else ``/tmp``) keeps the compiled C++
      kernels for a later process (see the README). The compiled graphs run without autograd whatever the caller's grad
      mode. A ``deepcopy`` of the result runs the original's compiled parts (as after
      ``nn.Module.compile``): optimize a copy of the original model instead.

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
    correct, but possibly slower than float32; int8 needs AVX-512 VNNI or AMX to be fast.
    """
    if not isinstance(model, GeneralizedRCNN):
        raise TypeError("model must be a fastmask MaskRCNN or a torchvision GeneralizedRCNN (Faster/Mask/Keypoint "
                        f"R-CNN), got {type(model).__name__}")
    int8 = dtype == torch.int8
    if not int8 and dtype not in PRECISIONS.values():
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16, torch.float16 or torch.int8, got {dtype}")
    if calibration is not None and not int8:
        raise ValueError("calibration is for dtype=torch.int8 (the quantized backbone's activation ranges)")
    if int8 and (calibration is None or len(calibration) == 0):
        raise ValueError("dtype=torch.int8 needs calibration: a list of images as the model takes them ([3, H, W] "
                         "floats in [0, 1]), on which the activations' ranges are measured")
    if int8 and next(model.parameters()).device.type != "cpu":
        raise ValueError("dtype=torch.int8 runs on the CPU only (oneDNN's int8 kernels): move the model to the CPU")
    network_dtype = torch.bfloat16 if int8 else dtype  # the networks that are not quantized
    low_precision = network_dtype != torch.float32
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
    _reset(model)
    if fold_batchnorm:
        fold_conv_batchnorm(model)
    parts = _network_parts(model)
    converted = parts[1:] if int8 else parts  # int8: the backbone is quantized instead
    for name, part, _ in converted:  # before any conversion
        for param_name, param in part.named_parameters():
            if not bool(torch.isfinite(param.to(network_dtype)).all()):
                hint = " (float16's range is too small: use torch.bfloat16)" if dtype == torch.float16 else ""
                raise ValueError(f"{name}.{param_name} has infinite or NaN values after batch-norm folding and "
                                 f"conversion to {network_dtype}{hint}")
    if int8:
        model.backbone = _quantized_backbone(model, calibration)
        # Features in bf16, as the bf16 model's: the heads take them, RoIAlign reads half the bytes.
        model.backbone.register_forward_hook(_CastOutputs(network_dtype, channels_last))
    for _, part, feeds_boxes in converted:
        part.to(dtype=network_dtype)
        if channels_last:
            part.to(memory_format=torch.channels_last)
        if low_precision or channels_last:
            part.register_forward_pre_hook(_CastInputs(network_dtype, channels_last))
        if low_precision and feeds_boxes:
            part.register_forward_hook(_CastOutputs(torch.float32))
    if low_precision:
        _pin_anchors_to_float32(model.rpn)
    if int8 if compile is None else compile:
        for name, part, _ in _network_parts(model):
            # int8: under bf16 autocast, the quantized convolutions return bf16 (not float32), and so
            # do the dequantized additions and upsamplings between them: half the memory traffic.
            _compile(name, part, network_dtype if int8 and part is model.backbone else None)
    return model

"""optimize_for_inference: batch norms folded into convolutions, channels_last, bf16/fp16 networks
whose box arithmetic stays float32; and the CLI's --precision / --channels-last."""
import copy

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from conftest import NO_TORCHVISION, assert_static_matches_eager

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
torchvision = pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

from torchvision.models import resnet  # noqa: E402
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402
from torchvision.ops.misc import Conv2dNormActivation, FrozenBatchNorm2d  # noqa: E402

from fastmask.cli import main  # noqa: E402
from fastmask.data import SyntheticShapes  # noqa: E402
from fastmask.engine import save_checkpoint  # noqa: E402
from fastmask.models import (MaskRCNN, fold_conv_batchnorm, maskrcnn_resnet_fpn, optimize_for_inference,  # noqa: E402
                             patch_torchvision)
from fastmask.models.inference import _network_parts  # noqa: E402
from test_export import has_cxx_compiler  # noqa: E402

SMALL = dict(min_size=64, max_size=96, box_score_thresh=0.0, rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
             box_detections_per_img=30)
NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)


def _randomize_norms(module: nn.Module) -> None:
    """Non-trivial statistics and affine parameters, so that a wrong fold shows."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, NORMS):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.1)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)


def small_model(norm_layer=FrozenBatchNorm2d, seed: int = 0) -> MaskRCNN:
    """A ResNet-18 FPN Mask R-CNN with random weights whose class scores are spread out (random
    logits scaled up), so that small changes of the logits rarely reorder detections."""
    torch.manual_seed(seed)
    body = resnet.resnet18(weights=None, norm_layer=norm_layer)
    _randomize_norms(body)
    model = MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=4, **SMALL).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(20)
    return model


def images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 64, 96, generator=g), torch.rand(3, 56, 80, generator=g)]


def _norm_count(module: nn.Module) -> int:
    return sum(isinstance(m, NORMS) for m in module.modules())


@pytest.mark.parametrize("depth, norms", [("resnet18", 1 + 8 * 2 + 3), ("resnet50", 1 + 16 * 3 + 4)])
def test_fold_finds_every_norm_of_resnet_backbones(depth, norms):
    # Stem conv1/bn1, every block's convN/bnN, every downsample (conv, norm): all of them.
    body = getattr(resnet, depth)(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3)
    assert _norm_count(backbone) == norms
    assert fold_conv_batchnorm(backbone) == norms
    assert _norm_count(backbone) == 0
    assert backbone.body.layer1[0].conv1.bias is not None and isinstance(backbone.body.bn1, nn.Identity)


def test_fold_only_where_the_norm_directly_follows_the_conv():
    conv, norm, shared = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)

    class Residual(nn.Sequential):  # its own forward: its children do not run in sequence
        def forward(self, x):
            return self[0](x) + self[1](x)

    cases = [
        IntermediateLayerGetter(nn.Sequential(conv, norm), {"0": "out"}),  # the conv's output is returned too
        Residual(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)),
        nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1)),  # norm before the conv
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),  # not directly
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)),  # batch statistics
        nn.Sequential(nn.Sequential(shared, nn.BatchNorm2d(4)), shared),  # the conv is used without the norm too
    ]
    for module in cases:  # in eval mode: but for the structure, their norms could be folded
        assert fold_conv_batchnorm(module.eval()) == 0, module
    training = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()  # normalises with batch statistics
    assert fold_conv_batchnorm(training) == 0 and fold_conv_batchnorm(training.eval()) == 1
    folded = nn.Sequential(nn.Conv2d(3, 4, 1, bias=True), nn.BatchNorm2d(4, affine=False)).eval()
    _randomize_norms(folded)
    x = torch.randn(2, 3, 5, 5)
    expected = folded(x)
    assert fold_conv_batchnorm(folded) == 1 and isinstance(folded[1], nn.Identity)
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-6)
    # A torchvision conv-norm-activation block (as in FPNs and v2 heads).
    block = Conv2dNormActivation(3, 4, norm_layer=nn.BatchNorm2d).eval()
    _randomize_norms(block)
    expected = block(x)
    assert fold_conv_batchnorm(block) == 1
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_layer", NORMS)
def test_folding_float64_gives_the_same_detections(norm_layer):
    model = small_model(norm_layer).double()
    folded = copy.deepcopy(model)
    assert fold_conv_batchnorm(folded) == 20 and _norm_count(folded) == 0
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        ref_features, features = model.backbone(x), folded.backbone(x)
        ref, out = model([im.double() for im in images()]), folded([im.double() for im in images()])
    for key, value in ref_features.items():
        torch.testing.assert_close(features[key], value, rtol=1e-12, atol=1e-12 * float(value.abs().max()))
    for r, o in zip(ref, out):
        assert len(r["boxes"]) > 0 and torch.equal(r["labels"], o["labels"])
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(o[key], r[key], rtol=1e-10, atol=1e-10)


def test_folding_v2_model_fpn_and_heads():
    # maskrcnn_resnet50_fpn_v2 has batch norms in its FPN and its box and mask heads too
    # (torchvision's Conv2dNormActivation blocks): all are folded, each part computes the same.
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=3,
                                                                   **SMALL).eval().double()
    _randomize_norms(model)
    folded = copy.deepcopy(model)
    norms = _norm_count(model)
    assert fold_conv_batchnorm(folded) == norms > _norm_count(model.backbone.body)
    assert _norm_count(folded) == 0
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    pooled = torch.rand(3, 256, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        ref, out = model.backbone(x), folded.backbone(x)
        for key, value in ref.items():
            torch.testing.assert_close(out[key], value, rtol=1e-12, atol=1e-12 * float(value.abs().max()))
        for head in ("box_head", "mask_head"):
            value = getattr(model.roi_heads, head)(pooled)
            torch.testing.assert_close(getattr(folded.roi_heads, head)(pooled), value, rtol=1e-12,
                                       atol=1e-12 * float(value.abs().max()))


def test_folding_float32_changes_features_by_rounding_only():
    # The folded weights are rounded to float32 once (instead of the conv output being scaled in
    # float32 by the norm): every layer's result moves by a few float32 ulps, ResNet-18's 20
    # layers compound that to about 1e-6 of the features' largest value; 1e-5 leaves 10x.
    model = small_model()
    folded = optimize_for_inference(model, torch.float32, channels_last=False)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref, out = model.backbone(x), folded.backbone(x)
    for key, value in ref.items():
        assert float((out[key] - value).abs().max()) <= 1e-5 * float(value.abs().max()), key


def test_returns_a_copy_unless_inplace():
    model = small_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert fast is not model and _norm_count(model) == 20
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32 and not model.backbone._forward_pre_hooks
    assert optimize_for_inference(model, inplace=True) is model and _norm_count(model) == 0


class Recorder:
    """The dtypes that reach the box arithmetic: the RPN's proposal generation and RoIHeads.detect."""

    def __init__(self, model: MaskRCNN):
        self.seen = {}
        rpn, heads = model.rpn, model.roi_heads
        propose, detect = rpn.propose, heads.detect

        def recording_propose(images, features, objectness, deltas, image_sizes=None):
            self.seen.update(features=features[0].dtype, objectness={o.dtype for o in objectness},
                             deltas={d.dtype for d in deltas})
            result = propose(images, features, objectness, deltas, image_sizes)
            self.seen["anchors"] = {a.dtype for a in rpn.anchor_generator.cell_anchors}
            return result

        def recording_detect(class_logits, box_regression, proposals, proposal_valid, image_sizes):
            self.seen.update(class_logits=class_logits.dtype, box_regression=box_regression.dtype,
                             proposals=proposals.dtype)
            return detect(class_logits, box_regression, proposals, proposal_valid, image_sizes)

        rpn.propose, heads.detect = recording_propose, recording_detect
        # Registered after optimize_for_inference's hooks: sees what they return.
        heads.mask_predictor.register_forward_hook(lambda m, args, out: self.seen.update(mask_logits=out.dtype))
        heads.box_head.register_forward_hook(lambda m, args, out: self.seen.update(box_head=out.dtype))

    def assert_float32_boxes(self, dtype):
        seen = self.seen
        assert seen["features"] == seen["box_head"] == dtype  # the networks do run in dtype
        assert seen["objectness"] == seen["deltas"] == seen["anchors"] == {torch.float32}
        assert seen["class_logits"] == seen["box_regression"] == seen["proposals"] == torch.float32
        assert seen["mask_logits"] == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_networks_float32_boxes(dtype):
    model = small_model()
    anchors = [a.clone() for a in model.rpn.anchor_generator.cell_anchors]
    rounded = copy.deepcopy(model)
    # As a low-precision call (e.g. under autocast) leaves them: in dtype, so anchors would be made in it.
    rounded.rpn.anchor_generator.set_cell_anchors(dtype, torch.device("cpu"))
    fast = optimize_for_inference(rounded, dtype)
    recorder = Recorder(fast)
    with torch.no_grad():
        ref, out = model(images()), fast(images())
    recorder.assert_float32_boxes(dtype)
    for a, b in zip(fast.rpn.anchor_generator.cell_anchors, anchors):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    assert fast.backbone.body.conv1.weight.dtype == dtype
    assert fast.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for r, o in zip(ref, out):
        assert {v.dtype for k, v in o.items() if k != "labels"} == {torch.float32}
        assert o["masks"].shape[1:] == r["masks"].shape[1:]
        # Seen: 8-10 in bf16 and fp16, with AMX and with oneDNN limited to AVX2.
        assert found_again(r, o) >= 7


def found_again(reference, output, top: int = 10) -> int:
    """How many of ``reference``'s leading detections ``output`` has too (same class, IoU > 0.9,
    score within 0.03): the same detections up to the networks' rounding, which moves
    random-weight boxes and reorders near-tied proposals."""
    found = 0
    for box, label, score in zip(reference["boxes"][:top], reference["labels"][:top], reference["scores"][:top]):
        overlaps = box_iou(box[None], output["boxes"])[0]
        same = (output["labels"] == label) & (overlaps > 0.9) & ((output["scores"] - score).abs() < 0.03)
        found += bool(same.any())
    return found


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_static_equals_forward(dtype):
    # 64 x 96 images are the network's size (no resize, no padding): forward_static's valid rows
    # are forward's detections, in float32 boxes from the same low-precision networks. The casts
    # trace into one graph (dynamo's full-graph trace with the eager backend).
    fast = optimize_for_inference(small_model(), dtype)
    batch = torch.rand(2, 3, 64, 96)
    try:
        with torch.no_grad():
            compiled = torch.compile(fast.forward_static, fullgraph=True, backend="eager")(batch)
    finally:
        # Forget forward_static's compilations: another size compiled later (tests/test_model.py)
        # would otherwise be traced with dynamic shapes.
        torch._dynamo.reset()
    recorder = Recorder(fast)
    with torch.no_grad():
        static = fast.forward_static(batch)
        eager = fast(list(batch))
    for key, value in static.items():
        assert torch.equal(compiled[key], value), key
    if dtype != torch.float32:
        recorder.assert_float32_boxes(dtype)
    assert static["boxes"].dtype == static["scores"].dtype == static["masks"].dtype == torch.float32
    assert_static_matches_eager(static, eager)


def test_reoptimizing_replaces_the_settings():
    model = small_model()
    compiled = optimize_for_inference(model, torch.bfloat16, compile=True)  # compiles on its first call only
    assert all(part._compiled_call_impl is not None for _, part, _ in _network_parts(compiled))
    fast = optimize_for_inference(compiled, torch.float32, channels_last=False)
    assert fast.backbone.body.conv1.weight.dtype == torch.float32
    assert len(fast.rpn.head._forward_hooks) == 0 and len(fast.backbone._forward_pre_hooks) == 0
    # The copy's compiled calls would run the original's modules: dropped.
    assert all(part._compiled_call_impl is None for _, part, _ in _network_parts(fast))
    assert compiled.backbone._compiled_call_impl is not None
    with torch.no_grad():
        out = fast(images())
    assert out[0]["boxes"].dtype == torch.float32 and len(out[0]["boxes"]) > 0


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="GeneralizedRCNN"):
        optimize_for_inference(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="dtype"):
        optimize_for_inference(small_model(), torch.float64)
    model = small_model()
    with torch.no_grad():  # a near-zero variance with eps 0: the folded weights exceed float16's range
        model.backbone.body.bn1.running_var[0] = 1e-14
        model.backbone.body.bn1.eps = 0.0
    with pytest.raises(ValueError, match="backbone.body.conv1.weight .*float16's range"):
        optimize_for_inference(model, torch.float16, inplace=True)
    assert model.backbone.body.conv1.weight.dtype == torch.float32 and not model.backbone._forward_pre_hooks
    optimize_for_inference(model, torch.bfloat16)  # bf16 has float32's range
    with pytest.raises(ValueError, match="needs calibration"):
        optimize_for_inference(model, torch.int8)
    with pytest.raises(ValueError, match="calibration is for dtype=torch.int8"):
        optimize_for_inference(model, torch.bfloat16, calibration=images())


def test_works_on_torchvision_maskrcnn():
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                                             **SMALL).eval()
    fast = optimize_for_inference(patch_torchvision(tv), torch.bfloat16)
    with torch.no_grad():
        (out,) = fast([torch.rand(3, 64, 80)])
    assert out["boxes"].dtype == torch.float32 and len(out["boxes"]) > 0
    assert fast.rpn.anchor_generator.cell_anchors[0].dtype == torch.float32
    # Unpatched, torchvision's RoIAlign would get bf16 features and float32 boxes: a clear error first.
    with pytest.raises(TypeError, match="patch_torchvision"):
        optimize_for_inference(torchvision.models.detection.maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=3, **SMALL), torch.bfloat16)


# compile=True and int8 compile C++ with Inductor: tens of seconds per model on 2 cores, and the
# wheel's test run has no compiler. Slow tests, which scripts/test.sh runs with the compiler.
needs_compiler = pytest.mark.skipif(not has_cxx_compiler(), reason="Inductor needs a C++ compiler (none on PATH)")


def calibration_images(count: int = 8):
    data = SyntheticShapes(count, (64, 96), seed=0)
    return [data[i][0] for i in range(count)]


def run_compiled(model, batches, static_batch):
    """forward on each batch of images, forward_static on ``static_batch`` and forward on its
    images, with Inductor's FX graph cache off (so its pattern counters count this compilation)."""
    counters.clear()
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False):
        return ([model(batch) for batch in batches], model.forward_static(static_batch), model(list(static_batch)))


def batches(height: int, width: int):
    """images() and two random images of height x width: a batch of other shapes (if the model's
    transform makes it 64 x 96 too, of other detection counts), which compiles graphs with dynamic
    sizes."""
    g = torch.Generator().manual_seed(2)
    return [images(), [torch.rand(3, height, width, generator=g), torch.rand(3, height, width, generator=g)]]


# Compiled float32 against eager (pixels, probabilities); seen on an AMX CPU: boxes within 1e-5,
# scores 4e-6, masks 3e-5.
FLOAT32_TOLERANCES = {"boxes": 1e-3, "scores": 5e-5, "masks": 1e-3}


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_matches_eager(dtype):
    # Only the networks are compiled, with freezing: each convolution runs fused with its ReLU and
    # residual addition. Detections equal the eager fast path's up to the networks' rounding, box
    # arithmetic stays float32, and forward_static's valid rows are forward's detections.
    eager = optimize_for_inference(small_model(), dtype)
    compiled = optimize_for_inference(small_model(), dtype, compile=True)
    recorder = Recorder(compiled)
    static_batch = torch.rand(2, 3, 64, 96)
    outputs, static, forward = run_compiled(compiled, batches(64, 64), static_batch)
    fused = counters["inductor"]
    assert fused["mkldnn_conv_binary_unary_fusion_matcher_count"] > 0  # conv + residual add + ReLU
    assert fused["mkldnn_unary_fusion_matcher_count"] > 0  # conv + ReLU
    recorder.assert_float32_boxes(dtype)
    with torch.no_grad():
        references = [eager(batch) for batch in batches(64, 64)]
        eager_static = eager.forward_static(static_batch)
    for reference, output in zip(references, outputs):
        for r, o in zip(reference, output):
            assert {v.dtype for k, v in o.items() if k != "labels"} == {torch.float32}
            if dtype == torch.float32:  # rounding only: Inductor reorders and fuses float32 arithmetic
                assert torch.equal(o["labels"], r["labels"])
                for key, atol in FLOAT32_TOLERANCES.items():
                    torch.testing.assert_close(o[key], r[key], rtol=0, atol=atol)
            else:  # a fused convolution and addition rounds to bf16 once instead of twice
                assert found_again(r, o) >= 7
    assert_static_matches_eager(static, forward)  # the same compiled networks
    if dtype == torch.float32:
        assert torch.equal(static["valid"], eager_static["valid"])
        for key, atol in FLOAT32_TOLERANCES.items():
            torch.testing.assert_close(static[key], eager_static[key], rtol=0, atol=atol)


@pytest.mark.slow
@needs_compiler
def test_int8_compiled():
    # Compiled, the quantized backbone runs oneDNN's int8 convolutions with the additions and
    # ReLUs after them fused; its features are bf16, as the heads; boxes stay float32, and
    # forward_static's valid rows are forward's detections. (Its accuracy against float32:
    # test_inference_accuracy.py.)
    pytest.importorskip("torchao")
    compiled = optimize_for_inference(small_model(), torch.int8, calibration=calibration_images())
    recorder = Recorder(compiled)
    # The exported backbone takes images whose smallest feature map (P6, 1/64 of the size) is more
    # than a pixel wide: here, of the calibration images' padded size, 64 x 96.
    outputs, static, forward = run_compiled(compiled, batches(60, 90), torch.rand(2, 3, 64, 96))
    lowered = counters["inductor"]
    assert lowered["qconv2d_binary_lower_count"] > 0 and lowered["qconv_unary_lower_count"] > 0
    recorder.assert_float32_boxes(torch.bfloat16)
    for output in outputs:
        for o in output:
            assert len(o["boxes"]) > 0 and {v.dtype for k, v in o.items() if k != "labels"} == {torch.float32}
    assert_static_matches_eager(static, forward)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_low_precision_float32_boxes(dtype):
    model = small_model().cuda()
    fast = optimize_for_inference(model, dtype)
    recorder = Recorder(fast)
    batch = torch.rand(2, 3, 64, 96, device="cuda")
    with torch.no_grad():
        eager = fast(list(batch))
        static = fast.forward_static(batch)
    recorder.assert_float32_boxes(dtype)
    for b, ref in enumerate(eager):
        valid = static["valid"][b]
        assert int(valid.sum()) == len(ref["boxes"]) > 0
        torch.testing.assert_close(static["boxes"][b][valid], ref["boxes"])


# The CLI: a tiny checkpoint (ResNet-18, 64-pixel images), flags parsed and applied.
TINY_CONFIG = {"arch": "resnet18", "num_classes": 4, "classes": ["background", "a", "b", "c"],
               "kwargs": {"min_size": 64, "max_size": 64, "rpn_pre_nms_top_n_test": 100,
                          "rpn_post_nms_top_n_test": 50}}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn("resnet18", weights_backbone=None, num_classes=4, **TINY_CONFIG["kwargs"])
    path = str(tmp_path_factory.mktemp("ckpt") / "checkpoint.pth")
    save_checkpoint(path, model, TINY_CONFIG)
    return path


def test_cli_flags_parse():
    from fastmask.cli import build_parser

    parser = build_parser()
    for command in (["predict", "--checkpoint", "c.pth"], ["evaluate", "--checkpoint", "c.pth"], ["bench"]):
        args = parser.parse_args(command)
        assert args.precision is None and not args.channels_last
        assert args.precision is None and not args.channels_last and not args.compile
        assert args.calibration_images is None
        args = parser.parse_args(command + ["--precision", "bf16", "--channels-last", "--compile"])
        assert args.precision == "bf16" and args.channels_last and args.compile
        args = parser.parse_args(command + ["--precision", "int8", "--calibration-images", "4"])
        assert args.precision == "int8" and args.calibration_images == 4
        with pytest.raises(SystemExit):
            parser.parse_args(command + ["--precision", "int4"])


@pytest.mark.parametrize("flags", [["--precision", "bf16", "--channels-last"], ["--precision", "fp16"], ["--compile"],
                                   ["--precision", "int8", "--calibration-images", "3"]])
def test_cli_predict_applies_the_optimization(tiny_checkpoint, tmp_path, monkeypatch, flags):
    import fastmask.models

    calls = []
    optimize = fastmask.models.optimize_for_inference

    def spy(model, **kwargs):
        calls.append(kwargs)
        # Compiling takes minutes: test_compiled_matches_eager and the slow CLI tests below do.
        return model if kwargs["compile"] else optimize(model, **kwargs)

    monkeypatch.setattr(fastmask.models, "optimize_for_inference", spy)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", tiny_checkpoint, "--num-images", "2", "--image-size", "64",
                 "--out", str(out), "--score-threshold", "0", *flags]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shapes-0000.png", "shapes-0001.png"]
    precision = flags[flags.index("--precision") + 1] if "--precision" in flags else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}[precision]
    (call,) = calls
    calibration = call.pop("calibration", None)
    assert call == {"dtype": dtype, "channels_last": "--channels-last" in flags, "inplace": True,
                    "compile": "--compile" in flags or precision == "int8"}
    if precision == "int8":  # the first training images: synthetic shapes of seed 0
        assert len(calibration) == 3 and torch.equal(calibration[0], SyntheticShapes(1, 64, seed=0)[0][0])


def test_cli_rejects_misplaced_flags(tiny_checkpoint):
    with pytest.raises(SystemExit, match="--calibration-images is for --precision int8"):
        main(["evaluate", "--checkpoint", tiny_checkpoint, "--calibration-images", "4", "--precision", "bf16"])
    with pytest.raises(SystemExit, match="--compile: for --checkpoint only"):
        main(["evaluate", "--package", "model.pt2", "--compile"])


def test_cli_evaluate_with_bf16(tiny_checkpoint, tmp_path):
    pytest.importorskip("pycocotools")
    assert main(["evaluate", "--checkpoint", tiny_checkpoint, "--num-images", "2", "--image-size", "64",
                 "--json", str(tmp_path / "ap.json"), "--precision", "bf16", "--channels-last"]) == 0
    assert (tmp_path / "ap.json").is_file()


def test_time_interleaved_ms_alternates_the_runs_and_stops_at_the_budget(monkeypatch):
    import fastmask.engine.bench as bench

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    calls = []

    def runner(name, seconds):
        def run():
            calls.append(name)
            clock[0] += seconds
        return run

    slow, fast = runner("slow", 0.004), runner("fast", 0.001)
    times = bench.time_interleaved_ms([slow, fast], torch.device("cpu"), repeats=5, warmup=2)
    assert calls == ["slow", "fast"] * 7  # two warm-up rounds, then five timed ones, in turn
    assert times == pytest.approx([4.0, 1.0])
    calls.clear()
    # The slow side's runs pass 14 ms in the fourth round: no fifth round.
    bench.time_interleaved_ms([slow, fast], torch.device("cpu"), repeats=50, warmup=0, budget_s=0.014)
    assert calls == ["slow", "fast"] * 4
    calls.clear()
    # At least three rounds, even when the first run alone passes the budget.
    bench.time_interleaved_ms([slow, fast], torch.device("cpu"), repeats=50, warmup=0, budget_s=0.001)
    assert calls == ["slow", "fast"] * 3
    calls.clear()
    assert bench.time_ms(fast, torch.device("cpu"), repeats=4, warmup=1) == pytest.approx(1.0)
    assert calls == ["fast"] * 5


def test_cli_bench_with_bf16_channels_last(monkeypatch, capsys):
    import fastmask.engine.bench as bench

    full_size = bench.model_pair
    monkeypatch.setattr(bench, "model_pair", lambda **kw: full_size(min_size=64, max_size=64, num_classes=3, **kw))
    assert main(["bench", "--device", "cpu", "--sizes", "48x64", "--repeats", "1", "--warmup", "0",
                 "--precision", "bf16", "--channels-last"]) == 0
    out = capsys.readouterr().out
    assert "(fastmask: bf16, channels_last, batch norms folded)" in out and "speed-up" in out


@pytest.mark.slow
@needs_compiler
def test_cli_bench_compiled(monkeypatch, capsys):
    import fastmask.engine.bench as bench

    full_size = bench.model_pair
    monkeypatch.setattr(bench, "model_pair", lambda **kw: full_size(min_size=64, max_size=64, num_classes=3, **kw))
    assert main(["bench", "--device", "cpu", "--sizes", "48x64", "--repeats", "1", "--warmup", "0",
                 "--precision", "bf16", "--channels-last", "--compile"]) == 0
    out = capsys.readouterr().out
    assert "(fastmask: bf16, channels_last, batch norms folded, compiled)" in out and "(compiles)" in out


@pytest.mark.slow
@needs_compiler
def test_cli_evaluate_int8(tiny_checkpoint, tmp_path):
    pytest.importorskip("pycocotools")
    pytest.importorskip("torchao")
    assert main(["evaluate", "--checkpoint", tiny_checkpoint, "--num-images", "2", "--image-size", "64",
                 "--json", str(tmp_path / "ap.json"), "--precision", "int8", "--calibration-images", "2"]) == 0
    assert (tmp_path / "ap.json").is_file()

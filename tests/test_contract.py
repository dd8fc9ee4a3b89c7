"""torchvision's contract beyond values, for roi_align / RoIAlign / MultiScaleRoIAlign / nms /
batched_nms / multi_image_nms: TorchScript, torch.fx and feature extraction, autocast,
quantized tensors, API edges and error classes. Each against torchvision where it has the
feature (scripts/torchvision_conformance.py runs torchvision's own tests on the same ground)."""
import io
import warnings
from collections import OrderedDict
from typing import List, Tuple

import pytest
import torch
import torch.fx
from torch import Tensor, nn

import fastmask
from fastmask.ops import MultiScaleRoIAlign, RoIAlign, batched_nms, multi_image_nms, nms, roi_align

from conftest import KEPT_BUILTINS, needs_torchvision, random_rois, torchvision

if torchvision is not None:  # (the tests that use them are @needs_torchvision)
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names


def script_roundtrip(scripted):
    """Saved and loaded: the scripted code holds no Python callbacks."""
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def random_boxes(n, size=100.0, dtype=torch.float32):
    """torchvision's test boxes: corners in [0, size), sizes up to size."""
    boxes = torch.rand(n, 4) * size
    boxes[:, 2:] += boxes[:, :2]
    return boxes.to(dtype)


def fpn_features(batch=2, channels=3, size=64, dtype=torch.float32):
    return OrderedDict((name, torch.randn(batch, channels, size // stride, size // stride, dtype=dtype))
                       for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32)))


def image_boxes(counts=(9, 6), size=64.0, dtype=torch.float32):
    out = []
    for n in counts:
        xy = torch.rand(n, 2) * size * 0.7
        wh = 2 + torch.rand(n, 2) * size * 0.5
        out.append(torch.cat([xy, xy + wh], 1).to(dtype))
    return out


# --- TorchScript ---------------------------------------------------------------------------------

def test_script_roi_align_matches_eager(seed):
    x = torch.randn(2, 3, 12, 10)
    rois = random_rois(7, 2, 12, 10, scale=0.5)
    scripted = torch.jit.script(roi_align)
    # (a saved function keeps neither its defaults nor the broadcast of an int output_size)
    assert torch.equal(script_roundtrip(scripted)(x, rois, [2, 5], 0.5, 2, True, None),
                       roi_align(x, rois, (2, 5), 0.5, 2, True))
    for output_size in (3, (4, 2), [2, 5]):
        for aligned in (False, True):
            expected = roi_align(x, rois, output_size, 0.5, 2, aligned)
            assert torch.equal(scripted(x, rois, output_size, 0.5, 2, aligned), expected)
    boxes = [rois[:4, 1:], rois[4:, 1:]]
    assert torch.equal(scripted(x, boxes, 3, 0.5, -1), roi_align(x, boxes, 3, 0.5, -1))
    assert torch.equal(scripted(x, rois, 3, 0.5, 2, True, True), roi_align(x, rois, 3, 0.5, 2, True, True))


def test_script_roi_align_gradient(seed):
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 4, 4], [0, 1, 2, 3, 5]], dtype=torch.float64)
    scripted = torch.jit.script(roi_align)
    assert torch.autograd.gradcheck(lambda z: scripted(z, rois, 2, 1.0, 2), (x,))
    grad = torch.randn(2, 2, 2, 2, dtype=torch.float64)
    (g_script,) = torch.autograd.grad(scripted(x, rois, 2, 1.0, 2), x, grad)
    (g_eager,) = torch.autograd.grad(roi_align(x, rois, 2, 1.0, 2), x, grad)
    assert torch.equal(g_script, g_eager)


@pytest.mark.parametrize("output_size", [3, (3, 2), [2, 2]])
def test_script_roi_align_module(seed, output_size):
    x = torch.randn(2, 1, 10, 10)
    boxes = [random_boxes(5, 9.0), random_boxes(5, 9.0)]
    for module in (RoIAlign(output_size, 1.0, -1), RoIAlign(output_size, 0.5, 2, True, deterministic=True)):
        scripted = script_roundtrip(torch.jit.script(module))
        assert torch.equal(scripted(x, boxes), module(x, boxes))
        assert torch.equal(scripted(x, torch.cat([torch.zeros(10, 1), torch.cat(boxes)], 1)),
                           module(x, torch.cat([torch.zeros(10, 1), torch.cat(boxes)], 1)))


@pytest.mark.parametrize("names", [["0", "1", "2", "3"], ["1"]])
@pytest.mark.parametrize("fixed", [False, True])
def test_script_multiscale_roi_align(seed, names, fixed):
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32][: len(names)] if fixed else None
    if fixed and names == ["1"]:
        scales = [1 / 8]
    module = MultiScaleRoIAlign(names, 3, 2, scales=scales)
    scripted = torch.jit.script(MultiScaleRoIAlign(names, 3, 2, scales=scales))
    feats, boxes, shapes = fpn_features(), image_boxes(), [(64, 64), (60, 50)]
    expected = module(feats, boxes, shapes)
    assert torch.equal(scripted(feats, boxes, shapes), expected)
    assert scripted.scales == module.scales
    assert torch.equal(script_roundtrip(scripted)(feats, boxes, shapes), expected)
    assert scripted(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], shapes).shape == (0, 3, 3, 3)


def test_script_nms_ops(seed):
    boxes, scores = random_boxes(200), torch.rand(200)
    idxs = torch.randint(0, 3, (200,))
    for fn, args in ((nms, (boxes, scores, 0.5)), (batched_nms, (boxes, scores, idxs, 0.5)),
                     (batched_nms, (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5))):
        scripted = torch.jit.script(fn)
        assert torch.equal(scripted(*args), fn(*args))
        assert torch.equal(script_roundtrip(scripted)(*args), fn(*args))
    scripted = torch.jit.script(multi_image_nms)
    b, s = random_boxes(2 * 50).view(2, 50, 4), torch.rand(2, 50)
    i, v = torch.randint(0, 3, (2, 50)), torch.rand(2, 50) > 0.2
    for kwargs in ({}, {"idxs": i}, {"idxs": i, "valid": v, "max_output": 7}):
        got, expected = scripted(b, s, 0.6, **kwargs), multi_image_nms(b, s, 0.6, **kwargs)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    got = script_roundtrip(scripted)(b, s, 0.6, i, v, 7)  # a saved function keeps no defaults
    assert torch.equal(got[0], multi_image_nms(b, s, 0.6, i, v, 7)[0])


def test_torchscript_builtin_ids_stay_valid_when_an_op_gains_an_overload():
    """conftest.py's workaround for a torch bug (stale ids in TorchScript's builtin table): the ops
    that refreshed packets drop stay alive, so no later object can take their ids."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (torch.compile's import: refreshes packets)

    table = torch.jit._builtins._get_builtin_table()
    ids = [i for i, name in table.items() if name.startswith("quantized_decomposed::")]
    assert len(ids) > len({table[i] for i in ids}), "no op was registered twice: no packet was refreshed"
    kept = {id(fn) for fn in KEPT_BUILTINS}
    assert all(i in kept for i in ids), "an op the table names was freed: its id is stale"


# --- torch.fx and feature extraction --------------------------------------------------------------

class NmsModule(nn.Module):
    def __init__(self, ops):
        super().__init__()
        self.ops = ops

    def forward(self, boxes: Tensor, scores: Tensor, idxs: Tensor) -> Tuple[Tensor, Tensor]:
        return self.ops.nms(boxes, scores, 0.5), self.ops.batched_nms(boxes, scores, idxs, 0.5)


class MultiImageNms(nn.Module):
    def forward(self, boxes: Tensor, scores: Tensor) -> Tuple[Tensor, Tensor]:
        return multi_image_nms(boxes, scores, 0.5, max_output=10)


def call_targets(graph_module):
    return [n.target for n in graph_module.graph.nodes if n.op == "call_function"]


def test_fx_trace_roi_align_module(seed):
    module = RoIAlign(5, 1.0, -1)
    traced = torch.fx.symbolic_trace(module)
    assert call_targets(traced) == [fastmask.ops.roi_align]  # one leaf node
    x, rois = torch.rand(2, 50, 5, 5), random_rois(4, 2, 9, 9)
    assert torch.equal(traced(x, rois), module(x, rois))


def test_fx_trace_multiscale_roi_align(seed):
    module = MultiScaleRoIAlign(["0", "1", "2", "3"], 3, 2)
    traced = torch.fx.symbolic_trace(module)
    assert module.scales is None  # tracing kept no Proxy in the module
    feats, boxes, shapes = fpn_features(), image_boxes(), [(64, 64), (60, 50)]
    assert torch.equal(traced(feats, boxes, shapes), module(feats, boxes, shapes))
    assert module.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]


@needs_torchvision
def test_fx_trace_nms_ops(seed):
    boxes, scores, idxs = random_boxes(100), torch.rand(100), torch.randint(0, 3, (100,))
    module = NmsModule(fastmask.ops)
    traced = torch.fx.symbolic_trace(module)
    assert call_targets(traced) == [fastmask.ops.nms, fastmask.ops.batched_nms]
    for got, expected in zip(traced(boxes, scores, idxs), NmsModule(torchvision.ops)(boxes, scores, idxs)):
        assert torch.equal(got, expected)
    traced = torch.fx.symbolic_trace(MultiImageNms())
    b, s = random_boxes(60).view(2, 30, 4), torch.rand(2, 30)
    for got, expected in zip(traced(b, s), multi_image_nms(b, s, 0.5, max_output=10)):
        assert torch.equal(got, expected)


class PoolWrapper(nn.Module):
    """torchvision's test wrapper (test_is_leaf_node): no output, the op's nodes and the inputs."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, a, b):
        self.layer(a, b)


class MultiScaleWrapper(PoolWrapper):
    def forward(self, a, b, c):
        self.layer(a, b, c)


@needs_torchvision
def test_graph_node_names():
    # torchvision's modules are leaf modules of its feature-extraction tracer; fastmask's are
    # traced into, and what they call is leaf functions only.
    train, evaluation = get_graph_node_names(PoolWrapper(RoIAlign(5, 1.0, -1)))
    assert train == evaluation == ["a", "b", "layer.roi_align"]
    train, evaluation = get_graph_node_names(MultiScaleWrapper(MultiScaleRoIAlign(["0"], 7, 2)))
    assert train == evaluation == ["a", "b", "c", "layer._filter_input", "layer.infer_scales",
                                   "layer._multiscale_roi_align"]
    leaves = {"leaf_modules": [RoIAlign, MultiScaleRoIAlign]}  # as torchvision's test sees its own
    assert get_graph_node_names(PoolWrapper(RoIAlign(5, 1.0, -1)), leaves)[0] == ["a", "b", "layer"]


class Detector(nn.Module):
    """A backbone and both poolers, built on fastmask's or torchvision's ops."""

    def __init__(self, ops):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.box_pool = ops.RoIAlign((3, 3), 0.5, 2, aligned=True)
        self.fpn_pool = ops.MultiScaleRoIAlign(["p2", "p3"], 3, 2)
        self.head = nn.Linear(2 * 4 * 9, 5)

    def forward(self, images: Tensor, boxes: List[Tensor]) -> Tensor:
        p2 = self.conv(images)
        p3 = self.down(p2)
        image_shapes = [(images.shape[-2], images.shape[-1])] * images.shape[0]
        pooled = self.box_pool(p3, boxes)
        fpn = self.fpn_pool({"p2": p2, "p3": p3}, boxes, image_shapes)
        return self.head(torch.cat([pooled, fpn], 1).flatten(1))


@needs_torchvision
def test_create_feature_extractor_matches_torchvision(seed):
    ours, theirs = Detector(fastmask.ops), Detector(torchvision.ops)
    theirs.load_state_dict(ours.state_dict())
    images = torch.randn(2, 3, 32, 32)
    boxes = image_boxes((4, 3), size=32.0)
    ours_nodes = get_graph_node_names(ours)[1]
    # torchvision's poolers are leaf modules of its tracer; fastmask's trace into leaf functions.
    assert any(n.endswith("roi_align") for n in ours_nodes) and "head" in ours_nodes
    out_ours = create_feature_extractor(ours, {"conv": "p2", "head": "out"})(images, boxes)
    out_theirs = create_feature_extractor(theirs, {"conv": "p2", "head": "out"})(images, boxes)
    assert torch.equal(out_ours["p2"], out_theirs["p2"])
    torch.testing.assert_close(out_ours["out"], out_theirs["out"], rtol=0, atol=1e-6)
    assert torch.equal(out_ours["out"], ours(images, boxes))


# --- autocast ---------------------------------------------------------------------------------------

def autocast_nms_boxes(n=1000, dtype=torch.bfloat16):
    boxes = random_boxes(n)
    return boxes.to(dtype), torch.rand(n).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@needs_torchvision
def test_autocast_cpu_nms_runs_in_float32(seed, dtype):
    boxes, scores = autocast_nms_boxes(dtype=dtype)
    expected = torchvision.ops.nms(boxes.float(), scores.float(), 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keep = nms(boxes, scores, 0.5)
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))
    assert keep.dtype == torch.int64 and torch.equal(keep, expected)


@needs_torchvision
def test_autocast_cpu_nms_repro():
    # The reported case: bf16 IoUs keep 437 boxes, float32 (and torchvision under autocast) 436.
    torch.manual_seed(0)
    boxes, scores = autocast_nms_boxes()
    keep_native = nms(boxes, scores, 0.5)  # outside autocast: the documented native bf16 path
    with torch.autocast("cpu"):
        keep = nms(boxes, scores, 0.5)
        reference = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(keep, reference)
    assert torch.equal(keep, nms(boxes.float(), scores.float(), 0.5))
    assert not torch.equal(keep_native, keep)  # the native path is still there, and differs here


@needs_torchvision
def test_autocast_cpu_batched_and_multi_image_nms(seed):
    boxes, scores = autocast_nms_boxes(600)
    idxs = torch.randint(0, 4, (600,))
    with torch.autocast("cpu"):
        keep = batched_nms(boxes, scores, idxs, 0.5)
        # torchvision's per-class path (its coordinate trick would add offsets in bf16); it orders
        # the many bf16 score ties arbitrarily, fastmask by index
        reference = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, 0.5)
        keep_b, counts = multi_image_nms(boxes.view(2, 300, 4), scores.view(2, 300), 0.5, idxs=idxs.view(2, 300))
    assert torch.equal(keep.sort()[0], reference.sort()[0])
    assert torch.equal(keep, batched_nms(boxes.float(), scores.float(), idxs, 0.5))
    for b in range(2):
        expected = batched_nms(boxes[300 * b:300 * (b + 1)].float(), scores[300 * b:300 * (b + 1)].float(),
                               idxs[300 * b:300 * (b + 1)], 0.5)
        assert torch.equal(keep_b[b, :counts[b]], expected)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rois_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("aligned", [False, True])
@needs_torchvision
def test_autocast_cpu_roi_align_matches_torchvision(seed, x_dtype, rois_dtype, aligned):
    x = torch.rand(2, 6, 10, 10, dtype=x_dtype).permute(0, 1, 3, 2).requires_grad_()
    x_tv = x.detach().clone().requires_grad_()
    rois = random_rois(8, 2, 10, 10).to(rois_dtype)
    with torch.autocast("cpu"):
        out = roi_align(x, rois, 5, 1.0, -1, aligned)
        out_tv = torchvision.ops.roi_align(x_tv, rois, 5, 1.0, -1, aligned)
    assert out.dtype == x_dtype
    assert torch.equal(out, out_tv)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_tv.backward(grad)
    assert x.grad.dtype == x_dtype and torch.equal(x.grad, x_tv.grad)


@needs_torchvision
def test_autocast_cpu_multiscale_roi_align_matches_torchvision(seed):
    names = ["0", "1", "2", "3"]
    feats = OrderedDict((k, v.bfloat16().requires_grad_()) for k, v in fpn_features().items())
    feats_tv = OrderedDict((k, v.detach().clone().requires_grad_()) for k, v in feats.items())
    boxes, shapes = image_boxes(), [(64, 64), (64, 64)]
    with torch.autocast("cpu"):
        out = MultiScaleRoIAlign(names, 3, 2)(feats, boxes, shapes)
        out_tv = torchvision.ops.MultiScaleRoIAlign(names, 3, 2)(feats_tv, boxes, shapes)
    assert out.dtype == torch.bfloat16 and torch.equal(out, out_tv)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_tv.backward(grad)
    for k in names:
        assert feats[k].grad.dtype == torch.bfloat16 and torch.equal(feats[k].grad, feats_tv[k].grad), k


def test_autocast_keeps_float64(seed):
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    rois = random_rois(4, 1, 8, 8, dtype=torch.float64)
    boxes, scores = random_boxes(50, dtype=torch.float64), torch.rand(50, dtype=torch.float64)
    with torch.autocast("cpu"):
        out = roi_align(x, rois, 2)
        keep = nms(boxes, scores, 0.5)
    assert out.dtype == torch.float64 and torch.equal(out, roi_align(x, rois, 2))
    assert torch.equal(keep, nms(boxes, scores, 0.5))


@pytest.mark.cuda
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rois_dtype", [torch.float32, torch.float16])
@needs_torchvision
def test_cuda_autocast_roi_align_matches_torchvision(seed, x_dtype, rois_dtype):
    x = torch.rand(2, 6, 10, 10, dtype=x_dtype, device="cuda").permute(0, 1, 3, 2)
    rois = random_rois(8, 2, 10, 10, device="cuda").to(rois_dtype)
    with torch.autocast("cuda"):
        out = roi_align(x, rois, 5, 1.0, 2, True)
        out_tv = torchvision.ops.roi_align(x, rois, 5, 1.0, 2, True)
    assert out.dtype == x_dtype
    torch.testing.assert_close(out, out_tv, rtol=0, atol=0)


@pytest.mark.cuda
@needs_torchvision
def test_cuda_autocast_nms_ops(seed):
    boxes, scores = autocast_nms_boxes(dtype=torch.float16)
    boxes, scores = boxes.cuda(), scores.cuda()
    idxs = torch.randint(0, 4, (1000,), device="cuda")
    with torch.autocast("cuda"):
        keep = nms(boxes, scores, 0.5)
        keep_b = batched_nms(boxes, scores, idxs, 0.5)
        keep_m, counts = multi_image_nms(boxes.view(2, 500, 4), scores.view(2, 500), 0.5)
        assert torch.equal(keep.cpu(), torchvision.ops.nms(boxes, scores, 0.5).cpu())
    assert torch.equal(keep, nms(boxes.float(), scores.float(), 0.5))
    assert torch.equal(keep_b, batched_nms(boxes.float(), scores.float(), idxs, 0.5))
    assert torch.equal(keep_m[0, :counts[0]], nms(boxes[:500].float(), scores[:500].float(), 0.5))


@pytest.mark.cuda
@needs_torchvision
def test_cuda_autocast_multiscale_roi_align_backward(seed):
    names = ["0", "1", "2", "3"]
    feats = OrderedDict((k, v.cuda().half().requires_grad_()) for k, v in fpn_features().items())
    feats_tv = OrderedDict((k, v.detach().clone().requires_grad_()) for k, v in feats.items())
    boxes = [b.cuda() for b in image_boxes()]
    with torch.autocast("cuda"):
        out = MultiScaleRoIAlign(names, 3, 2)(feats, boxes, [(64, 64)] * 2)
        out_tv = torchvision.ops.MultiScaleRoIAlign(names, 3, 2)(feats_tv, boxes, [(64, 64)] * 2)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, out_tv, rtol=0, atol=0)
    out.float().sum().backward()
    out_tv.float().sum().backward()
    for k in names:
        assert feats[k].grad.dtype == torch.float16
        torch.testing.assert_close(feats[k].grad, feats_tv[k].grad, rtol=0, atol=1e-3)


# --- quantized tensors -------------------------------------------------------------------------------

QDTYPES = [torch.quint8, torch.qint8, torch.qint32]


def quantized(t, scale, zero_point, qdtype):
    with warnings.catch_warnings():  # torch 2.14 deprecates quantized tensors; torchvision still takes them
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_tensor(t, scale=scale, zero_point=zero_point, dtype=qdtype)


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("scale,zero_point", [(1.0, 0), (2.0, 10), (0.1, 50), (0.37, 3)])
@pytest.mark.parametrize("aligned", [False, True])
@needs_torchvision
def test_quantized_roi_align_equals_torchvision(seed, qdtype, scale, zero_point, aligned):
    x = torch.randint(50, 100, (1, 3, 10, 12)).float()
    qx = quantized(x, scale, zero_point, qdtype)
    rois = torch.randint(0, 6, (200, 5)).float() + torch.rand(200, 5)
    rois[:, 0] = 0
    rois[:, 3:] += rois[:, 1:3]
    qrois = quantized(rois, scale, zero_point, qdtype)
    for output_size, spatial_scale, sampling_ratio in ((5, 1.0, -1), ((3, 4), 0.5, 2), (2, 2.0, 0)):
        out = roi_align(qx, qrois, output_size, spatial_scale, sampling_ratio, aligned)
        ref = torchvision.ops.roi_align(qx, qrois, output_size, spatial_scale, sampling_ratio, aligned)
        assert out.dtype == qdtype and out.q_scale() == ref.q_scale() and out.q_zero_point() == ref.q_zero_point()
        assert torch.equal(out.int_repr(), ref.int_repr())
    module = RoIAlign(5, 1.0, -1, aligned)
    assert torch.equal(module(qx, qrois).int_repr(), torchvision.ops.RoIAlign(5, 1.0, -1, aligned)(qx, qrois).int_repr())


def test_quantized_roi_align_errors():
    qx = quantized(torch.rand(2, 3, 8, 8) * 50, 1.0, 0, torch.qint8)
    qrois = quantized(torch.tensor([[0, 0, 0, 4, 4.]]), 1.0, 0, torch.qint8)
    with pytest.raises(RuntimeError, match="Only one image per batch is allowed"):
        roi_align(qx, qrois, 5)
    with pytest.raises(ValueError, match="rois must also be quantized"):
        roi_align(qx[:1], torch.tensor([[0, 0, 0, 4, 4.]]), 5)
    with pytest.raises(AssertionError):
        roi_align(qx[:1], qrois[:, 1:], 5)


@pytest.mark.parametrize("qdtype", QDTYPES)
@pytest.mark.parametrize("scale,zero_point", [(1.0, 0), (2.0, 50), (3.0, 10), (0.25, 7)])
@needs_torchvision
def test_quantized_nms_equals_torchvision(seed, qdtype, scale, zero_point):
    boxes = random_boxes(1000, size=60.0)
    scores = torch.rand(1000) * 100
    qboxes, qscores = quantized(boxes, scale, zero_point, qdtype), quantized(scores, scale, zero_point, qdtype)
    for threshold in (0.2, 0.5, 0.8):
        keep = nms(qboxes, qscores, threshold)
        assert torch.equal(keep, torchvision.ops.nms(qboxes, qscores, threshold))
        # torchvision's own check: quantized NMS is the NMS of the dequantized values
        assert torch.equal(keep, nms(qboxes.dequantize(), qscores.dequantize(), threshold))


def test_quantized_nms_needs_quantized_scores():
    qboxes = quantized(random_boxes(10), 1.0, 0, torch.quint8)
    with pytest.raises(TypeError, match="scores must also be quantized"):
        nms(qboxes, torch.rand(10), 0.5)


# --- API edges and error classes ------------------------------------------------------------------

@pytest.mark.parametrize("boxes", [torch.empty((0,)), torch.empty((0, 4)), torch.empty((0, 4), dtype=torch.float64)])
@needs_torchvision
def test_batched_nms_of_no_boxes_is_empty(boxes):
    for keep in (batched_nms(boxes, None, None, None), batched_nms(boxes, torch.rand(3), torch.zeros(3), 0.5),
                 torchvision.ops.batched_nms(boxes, None, None, None)):
        assert keep.dtype == torch.int64 and keep.shape == (0,) and keep.device == boxes.device


@pytest.mark.parametrize("boxes,scores", [
    (torch.rand(4), torch.rand(3)),
    (torch.rand(3, 5), torch.rand(3)),
    (torch.rand(3, 4), torch.rand(3, 2)),
    (torch.rand(3, 4), torch.rand(4)),
])
@needs_torchvision
def test_nms_argument_errors_are_torchvisions_class_too(boxes, scores):
    with pytest.raises(RuntimeError):  # torchvision's class
        torchvision.ops.nms(boxes, scores, 0.5)
    with pytest.raises(RuntimeError):
        nms(boxes, scores, 0.5)
    with pytest.raises(ValueError, match=r"fastmask\.nms: (boxes|scores) must be a \[N"):
        nms(boxes, scores, 0.5)
    with pytest.raises(RuntimeError, match=r"fastmask\.nms"):
        batched_nms(boxes, scores, torch.zeros(len(scores), dtype=torch.int64), 0.5)


def test_nms_type_and_multi_image_errors():
    with pytest.raises(TypeError, match="scores must be floating point") as info:
        nms(torch.rand(3, 4), torch.arange(3), 0.5)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, fastmask.NmsTypeError)
    with pytest.raises(ValueError, match=r"idxs must be a \[N\] tensor") as info:
        batched_nms(torch.rand(3, 4), torch.rand(3), torch.zeros(2, dtype=torch.int64), 0.5)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, fastmask.NmsArgumentError)
    with pytest.raises(ValueError, match=r"boxes must be a \[B, N, 4\]") as info:
        multi_image_nms(torch.rand(3, 4), torch.rand(3), 0.5)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(TypeError, match="boxes must be a Tensor"):
        nms([[0, 0, 1, 1]], torch.rand(1), 0.5)


@needs_torchvision
def test_roi_align_box_errors_are_assertion_errors_too():
    x = torch.linspace(1, 64, 64).reshape(1, 1, 8, 8)
    cases = [  # (boxes, fastmask's clear class, its message, whether torchvision asserts too)
        (torch.tensor([[0, 0, 3, 3.]]), ValueError, r"boxes must be a \[K, 5\] tensor", True),
        ([torch.tensor([[0, 0, 3.]])], ValueError, r"boxes\[0\] must be a \[K, 4\] tensor", True),
        ("boxes", TypeError, "boxes must be a \\[K, 5\\] Tensor or a list", True),
        ([[0, 0, 3, 3]], TypeError, r"boxes\[0\] must be a Tensor", False),  # torchvision: AttributeError
    ]
    for boxes, clear_class, match, torchvision_asserts in cases:
        if torchvision_asserts:
            with pytest.raises(AssertionError):  # torchvision's class (torch._assert)
                torchvision.ops.roi_align(x, boxes, output_size=(2, 2))
        with pytest.raises(AssertionError):
            roi_align(x, boxes, output_size=(2, 2))
        with pytest.raises(clear_class, match=match):
            roi_align(x, boxes, output_size=(2, 2))
        with pytest.raises(AssertionError):
            RoIAlign((2, 2), 1.0, -1)(x, boxes)
    with pytest.raises(AssertionError):
        MultiScaleRoIAlign(["0"], 2, 2)({"0": x}, [torch.rand(2, 3)], [(8, 8)])


def test_roi_align_deterministic_is_positional_too(seed):
    x = torch.randn(1, 2, 6, 6)
    rois = random_rois(3, 1, 6, 6)
    assert torch.equal(roi_align(x, rois, 2, 1.0, 2, True, True), roi_align(x, rois, 2, 1.0, 2, True, deterministic=True))

"""MultiScaleRoIAlign against torchvision's: level mapping, values, gradients, one launch."""
from collections import OrderedDict

import pytest
import torch

from conftest import needs_torchvision, torchvision
from fastmask.ops import MultiScaleRoIAlign
from fastmask.ops.poolers import infer_scales, map_levels


def fpn_features(batch, channels, image_hw, dtype=torch.float32, layout=torch.contiguous_format):
    h, w = image_hw
    feats = OrderedDict()
    for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)):
        f = torch.randn(batch, channels, -(-h // stride), -(-w // stride), dtype=dtype)
        feats[name] = f.contiguous(memory_format=layout)
    return feats


def random_boxes(n, image_hw, dtype=torch.float32):
    h, w = image_hw
    # log-uniform sizes from 2 to ~the image, so every FPN level gets boxes
    size = torch.exp(torch.rand(n, 2) * (torch.log(torch.tensor(float(max(h, w)))) - 0.7) + 0.7)
    xy = torch.rand(n, 2) * torch.tensor([w, h]) - size / 4
    return torch.cat([xy, xy + size], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("output_size,sampling_ratio", [(7, 2), (14, 2), ((5, 3), -1)])
@needs_torchvision
def test_matches_torchvision(seed, dtype, layout, output_size, sampling_ratio):
    image_shapes = [(120, 164), (100, 150)]
    feats = fpn_features(2, 6, (128, 192), dtype, layout)
    boxes = [random_boxes(n, image_shapes[i], dtype) for i, n in enumerate((30, 17))]
    names = ["0", "1", "2", "3"]
    ours = MultiScaleRoIAlign(names, output_size, sampling_ratio)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)

    leaves_f = OrderedDict((k, v.detach().clone().requires_grad_()) for k, v in feats.items())
    leaves_t = OrderedDict((k, v.detach().contiguous().requires_grad_()) for k, v in feats.items())
    out_f = ours(leaves_f, boxes, image_shapes)
    out_t = theirs(leaves_t, boxes, image_shapes)
    assert torch.equal(out_f, out_t)
    assert ours.scales == theirs.scales
    grad = torch.randn_like(out_t)
    out_f.backward(grad)
    out_t.backward(grad)
    for k in names:
        assert torch.equal(leaves_f[k].grad, leaves_t[k].grad), k
        if layout == torch.channels_last:
            assert leaves_f[k].grad.is_contiguous(memory_format=torch.channels_last)
    assert leaves_f["pool"].grad is None


@needs_torchvision
def test_fixed_scales_on_a_padded_canvas(seed):
    # A wide image on a square canvas: torchvision infers the scales from the image's height and
    # doubles them; fixed scales pool what torchvision pools when it infers them correctly.
    feats = fpn_features(1, 4, (256, 256))
    boxes = [random_boxes(20, (120, 256))]
    names = ["0", "1", "2", "3"]
    fixed = MultiScaleRoIAlign(names, 7, 2, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32])
    reference = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)(feats, boxes, [(256, 256)])
    assert torch.equal(fixed(feats, boxes, [(120, 256)]), reference)
    assert MultiScaleRoIAlign(names, 7, 2)(feats, boxes, [(120, 256)]).shape == reference.shape
    assert fixed.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    with pytest.raises(ValueError, match="scales"):
        MultiScaleRoIAlign(names, 7, 2, scales=[0.25])


@needs_torchvision
def test_levels_equal_torchvision_level_mapper(seed):
    boxes = random_boxes(500, (800, 1216))
    tv = torchvision.ops.poolers.LevelMapper(2, 5)
    assert torch.equal(map_levels(boxes, 2, 5), tv([boxes]))


@needs_torchvision
def test_single_level_and_empty_boxes(seed):
    feats = fpn_features(2, 3, (64, 64))
    image_shapes = [(64, 64), (64, 64)]
    boxes = [random_boxes(4, (64, 64)), random_boxes(3, (64, 64))]
    ours = MultiScaleRoIAlign(["1"], 3, 2)
    theirs = torchvision.ops.MultiScaleRoIAlign(["1"], 3, 2)
    assert torch.equal(ours(feats, boxes, image_shapes), theirs(feats, boxes, image_shapes))
    m = MultiScaleRoIAlign(["0", "1", "2", "3"], 3, 2)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    assert m(feats, empty, image_shapes).shape == (0, 3, 3, 3)


def test_gradcheck(seed):
    feats = OrderedDict(
        (k, v.requires_grad_()) for k, v in fpn_features(1, 2, (32, 32), torch.float64).items() if k in ("0", "1")
    )
    boxes = [torch.tensor([[1.0, 2.0, 9.0, 7.5], [3.0, 1.0, 30.0, 29.0], [0.5, 0.5, 200, 180]], dtype=torch.float64)]
    m = MultiScaleRoIAlign(["0", "1"], 2, 2, canonical_scale=16, canonical_level=3)

    def fn(a, b):
        return m(OrderedDict([("0", a), ("1", b)]), boxes, [(32, 32)])

    assert torch.autograd.gradcheck(fn, (feats["0"], feats["1"]))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
# `deterministic` selects a CUDA backward kernel; the CPU ignores it.
DETERMINISTIC = {"cpu": (False,), "cuda": (False, True)}
# Level 1 of the second pair is empty: RoIs mapped to it pool zeros.
LEVEL_SHAPES = [((16, 16), (8, 8)), ((16, 16), (0, 8))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", LEVEL_SHAPES)
def test_opcheck(seed, device, shapes):
    feats = [torch.randn((2, 3) + s, device=device, requires_grad=True) for s in shapes]
    rois = torch.tensor([[0, 1.0, 1, 9, 9], [1, 2, 3, 30, 31], [0, 0, 0, 60, 60]], device=device)
    levels = torch.tensor([0, 1, 1], device=device)
    for deterministic in DETERMINISTIC[device]:
        torch.library.opcheck(
            torch.ops.fastmask.multi_level_roi_align.default,
            (feats, rois, levels, [0.25, 0.125], 3, 3, 2, False, deterministic),
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shapes", LEVEL_SHAPES)
def test_opcheck_backward(seed, device, shapes):
    grad = torch.randn(3, 3, 2, 2, device=device)
    rois = torch.tensor([[0, 1.0, 1, 9, 9], [1, 2, 3, 30, 31], [0, 0, 0, 60, 60]], device=device)
    levels = torch.tensor([0, 1, 1], device=device)
    heights, widths = [h for h, _ in shapes], [w for _, w in shapes]
    for channels_last in (False, True):
        for deterministic in DETERMINISTIC[device]:
            torch.library.opcheck(
                torch.ops.fastmask.multi_level_roi_align_backward.default,
                (grad, rois, levels, [0.25, 0.125], heights, widths, 2, 3, 2, 2, 2, False, channels_last,
                 deterministic),
            )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@needs_torchvision
def test_half_types(seed, dtype):
    image_shapes = [(120, 164)]
    feats = fpn_features(1, 8, (128, 192))
    boxes = [random_boxes(40, image_shapes[0])]
    names = ["0", "1", "2", "3"]
    ref = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)(feats, boxes, image_shapes)
    half = OrderedDict((k, v.to(dtype)) for k, v in feats.items())
    out = MultiScaleRoIAlign(names, 7, 2)(half, boxes, image_shapes)
    assert out.dtype == dtype
    tol = 5e-3 if dtype == torch.float16 else 3e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


def test_module_errors():
    feats = fpn_features(1, 3, (64, 64))
    m = MultiScaleRoIAlign(["p9"], 3, 2)
    with pytest.raises(ValueError, match="none of featmap_names"):
        m(feats, [torch.zeros(1, 4)], [(64, 64)])
    m = MultiScaleRoIAlign(["0", "1"], 3, 2)
    with pytest.raises(TypeError, match="list of"):
        m(feats, torch.zeros(1, 5), [(64, 64)])
    with pytest.raises(ValueError, match="image_shapes must not be empty"):
        m(feats, [torch.zeros(1, 4)], [])


def test_bad_level_index_raises_on_cpu():
    feats = [torch.randn(1, 3, 16, 16), torch.randn(1, 3, 8, 8)]
    rois = torch.tensor([[0, 1.0, 1, 9, 9]])
    with pytest.raises(IndexError, match=r"levels\[0\] is 2"):
        torch.ops.fastmask.multi_level_roi_align(feats, rois, torch.tensor([2]), [0.25, 0.125], 2, 2, 2, False)
    # Called directly, a value error arrives as a RuntimeError named by its message (what crosses
    # the stable ABI); fastmask's wrappers raise it as ValueError (tests/test_package.py).
    with pytest.raises(RuntimeError, match="^ValueError: .*2 feature maps but 1 spatial scales"):
        torch.ops.fastmask.multi_level_roi_align(feats, rois, torch.tensor([0]), [0.25], 2, 2, 2, False)
    with pytest.raises(RuntimeError, match="^ValueError: .*same batch size and channels"):
        torch.ops.fastmask.multi_level_roi_align(
            [feats[0], torch.randn(1, 4, 8, 8)], rois, torch.tensor([0]), [0.25, 0.125], 2, 2, 2, False
        )


def test_compile_fullgraph(seed):
    feats = [torch.randn(1, 3, 16, 16), torch.randn(1, 3, 8, 8)]
    rois = torch.tensor([[0, 1.0, 1, 9, 9], [0, 2, 3, 30, 31]])
    levels = torch.tensor([0, 1])

    @torch.compile(fullgraph=True, backend="aot_eager")
    def pool(a, b):
        return torch.ops.fastmask.multi_level_roi_align([a, b], rois, levels, [0.25, 0.125], 2, 2, 2, False) * 2

    ref = torch.ops.fastmask.multi_level_roi_align(feats, rois, levels, [0.25, 0.125], 2, 2, 2, False) * 2
    assert torch.equal(pool(*feats), ref)


@needs_torchvision
def test_compile_module_with_inferred_scales_at_two_sizes(seed):
    # The second size makes torch.compile trace again with symbolic sizes: the inferred scales
    # must stay functions of them (a scale read from a tensor was data-dependent, and testing it
    # failed), and both calls equal torchvision's pooler.
    torch._dynamo.reset()
    ours, theirs = MultiScaleRoIAlign(["0", "1"], 3, 2), torchvision.ops.MultiScaleRoIAlign(["0", "1"], 3, 2)
    pool = torch.compile(ours, fullgraph=True, backend="eager")
    try:
        for size in (64, 96):
            feats = {"0": torch.randn(2, 3, size // 4, size // 4), "1": torch.randn(2, 3, size // 8, size // 8)}
            boxes = [torch.tensor([[1.0, 2, 30, 40], [4, 4, 9, 12]]), torch.tensor([[0.0, 0, size - 1, size - 1]])]
            shapes = [(size, size), (size - 8, size)]
            assert torch.equal(pool(feats, boxes, shapes), theirs(feats, boxes, shapes))
    finally:
        torch._dynamo.reset()


def test_compile_infers_scale_zero_for_an_empty_level_as_eager():
    features = [torch.randn(1, 2, 16, 16), torch.randn(1, 2, 0, 8), torch.randn(1, 2, 4, 4)]
    pooler = MultiScaleRoIAlign(["0", "1", "2"], 2, 2)
    x = dict(zip(["0", "1", "2"], features))
    boxes = [torch.tensor([[1.0, 1, 40, 40], [2, 2, 9, 9]])]
    torch._dynamo.reset()
    try:
        assert torch.compile(infer_scales, fullgraph=True, backend="eager")(features, [(64, 64)]) == [0.25, 0.0, 0.0625]
        compiled = torch.compile(pooler, fullgraph=True, backend="eager")(x, boxes, [(64, 64)])
    finally:
        torch._dynamo.reset()
    assert torch.equal(compiled, pooler(x, boxes, [(64, 64)]))


def per_level_reference(features, rois, levels, scales, output_size, sampling_ratio, aligned=False):
    """torchvision's roi_align of each RoI on its own level; zeros for RoIs on an empty level."""
    first = features[0]
    out = first.new_zeros((rois.shape[0], first.shape[1]) + output_size)
    for level, (f, scale) in enumerate(zip(features, scales)):
        idx = torch.nonzero(levels == level).flatten()
        if idx.numel() and f.shape[-2] > 0 and f.shape[-1] > 0:
            out[idx] = torchvision.ops.roi_align(f, rois[idx], output_size, scale, sampling_ratio, aligned)
    return out


def empty_level_case(dtype=torch.float32, empty_shape=(0, 4)):
    """The report's case: level 1 of the pair has no rows (or no columns)."""
    features = [torch.randn(2, 4, 8, 8, dtype=dtype), torch.randn((2, 4) + empty_shape, dtype=dtype)]
    boxes = [torch.tensor([[1.0, 1, 5, 5]], dtype=dtype), torch.tensor([[2.0, 2, 6, 6]], dtype=dtype)]
    return features, boxes


@pytest.mark.parametrize("empty_shape", [(0, 4), (4, 0), (0, 0)])
@needs_torchvision
def test_an_empty_level_does_not_zero_the_others(seed, empty_shape):
    features, boxes = empty_level_case(empty_shape=empty_shape)
    leaves = OrderedDict((str(i), f.clone().requires_grad_()) for i, f in enumerate(features))
    pooler = MultiScaleRoIAlign(["0", "1"], 2, 2, scales=[1.0, 0.5])
    out = pooler(leaves, boxes, [(8, 8), (8, 8)])
    rois = torch.cat([torch.tensor([[0.0], [1.0]]), torch.cat(boxes)], 1)
    assert torch.equal(map_levels(rois[:, 1:], 0, 1), torch.tensor([0, 0]))  # both on the non-empty level
    assert out.abs().sum() > 0
    x0 = features[0].clone().requires_grad_()
    ref = torchvision.ops.roi_align(x0, rois, 2, 1.0, 2)
    assert torch.equal(out, ref)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    assert torch.equal(leaves["0"].grad, x0.grad)
    assert leaves["1"].grad.shape == features[1].shape


@needs_torchvision
def test_inferred_scales_with_an_empty_level(seed):
    # torchvision infers scale 0 for an empty level; in the middle it pools as with any scale (its
    # RoIs give zeros), as torchvision's does; at either end it cannot set the level range.
    feats = fpn_features(2, 3, (64, 96))
    feats["1"] = feats["1"][:, :, :0]
    boxes = [random_boxes(6, (64, 96)), random_boxes(5, (64, 96))]
    names = ["0", "1", "2", "3"]
    ours, ref = MultiScaleRoIAlign(names, 3, 2), torchvision.ops.MultiScaleRoIAlign(names, 3, 2)
    out = ours(feats, boxes, [(64, 96)] * 2)
    assert ours.scales == [0.25, 0.0, 0.0625, 0.03125]
    assert torch.equal(out, ref(feats, boxes, [(64, 96)] * 2))
    feats["3"] = feats["3"][:, :, :0]
    with pytest.raises(ValueError, match="pass scales"):
        ours(feats, boxes, [(64, 96)] * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@needs_torchvision
def test_rois_on_an_empty_level_give_zeros_and_others_their_gradient(seed, dtype, layout):
    features = [torch.randn(2, 5, 9, 11, dtype=dtype), torch.randn(2, 5, 0, 6, dtype=dtype),
                torch.randn(2, 5, 3, 3, dtype=dtype)]
    features = [f.contiguous(memory_format=layout) for f in features]
    scales = [1.0, 0.5, 0.25]
    rois = torch.tensor([[0, 1, 1, 5, 5], [1, 2, 2, 6, 6], [0, 0, 0, 9, 11], [1, 3, 1, 8, 7], [1, -2, 0, 12, 10]],
                        dtype=dtype)
    levels = torch.tensor([0, 1, 2, 1, 0])
    for sampling_ratio in (-1, 2):
        leaves = [f.detach().clone().requires_grad_() for f in features]
        out = torch.ops.fastmask.multi_level_roi_align(leaves, rois, levels, scales, 3, 2, sampling_ratio, False)
        ref_leaves = [f.detach().contiguous().requires_grad_() for f in features]
        ref = per_level_reference(ref_leaves, rois, levels, scales, (3, 2), sampling_ratio)
        assert torch.equal(out, ref)
        assert torch.equal(out[levels == 1], torch.zeros_like(out[levels == 1]))
        grad = torch.randn_like(ref)
        out.backward(grad)
        ref.backward(grad)
        for level in (0, 2):
            assert torch.equal(leaves[level].grad, ref_leaves[level].grad), level
            assert leaves[level].grad.abs().sum() > 0
        assert leaves[1].grad.shape == (2, 5, 0, 6)


@needs_torchvision
def test_empty_level_gradcheck():
    features = [torch.randn(1, 1, 5, 6, dtype=torch.float64, requires_grad=True),
                torch.randn(1, 1, 0, 3, dtype=torch.float64),
                torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)]
    rois = torch.tensor([[0, 0.3, 0.7, 4.9, 4.2], [0, 1.1, 0.4, 6.5, 3.3], [0, 2.2, 2.1, 9.9, 11.7]],
                        dtype=torch.float64)
    levels = torch.tensor([0, 1, 2])

    def fn(a, b):
        return torch.ops.fastmask.multi_level_roi_align([a, features[1], b], rois, levels, [1.0, 0.5, 0.25],
                                                        2, 2, 2, True)

    # (A pooler that zeroed everything would pass gradcheck: check the values too.)
    ref = per_level_reference([f.detach() for f in features], rois, levels, [1.0, 0.5, 0.25], (2, 2), 2, True)
    assert ref[0].abs().sum() > 0 and ref[2].abs().sum() > 0
    assert torch.equal(fn(features[0], features[2]), ref)
    assert torch.autograd.gradcheck(fn, (features[0], features[2]))


def test_every_level_empty_and_batch_of_zero():
    rois = torch.tensor([[0, 1.0, 1, 5, 5], [0, 2, 2, 6, 6]])
    empty = [torch.randn(1, 3, 0, 5, requires_grad=True), torch.randn(1, 3, 4, 0, requires_grad=True)]
    out = torch.ops.fastmask.multi_level_roi_align(empty, rois, torch.tensor([0, 1]), [1.0, 0.5], 2, 2, 2, False)
    assert torch.equal(out, torch.zeros(2, 3, 2, 2))
    out.sum().backward()
    assert [f.grad.shape for f in empty] == [(1, 3, 0, 5), (1, 3, 4, 0)]
    # No image at all (and so no RoI): an empty result and empty gradients of the right shapes.
    for shapes in (((8, 8), (4, 4)), ((8, 8), (0, 4))):
        feats = [torch.randn((0, 3) + s, requires_grad=True) for s in shapes]
        out = torch.ops.fastmask.multi_level_roi_align(feats, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long),
                                                       [1.0, 0.5], 2, 2, 2, False)
        assert out.shape == (0, 3, 2, 2)
        out.sum().backward()
        assert [f.grad.shape for f in feats] == [f.shape for f in feats]
    pooler = MultiScaleRoIAlign(["0", "1"], 2, 2, scales=[1.0, 0.5])
    feats = OrderedDict([("0", torch.randn(0, 3, 8, 8)), ("1", torch.randn(0, 3, 0, 4))])
    assert pooler(feats, [], [(8, 8)]).shape == (0, 3, 2, 2)


@pytest.mark.cuda
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("empty_shape", [(0, 4), (4, 0)])
@needs_torchvision
def test_cuda_empty_level(seed, deterministic, empty_shape):
    features = [torch.randn(2, 33, 9, 11, dtype=torch.float64), torch.randn((2, 33) + empty_shape, dtype=torch.float64),
                torch.randn(2, 33, 3, 3, dtype=torch.float64)]
    scales = [1.0, 0.5, 0.25]
    rois = torch.tensor([[0, 1, 1, 5, 5], [1, 2, 2, 6, 6], [0, 0, 0, 9, 11], [1, 3, 1, 8, 7], [1, -2, 0, 12, 10]],
                        dtype=torch.float64)
    levels = torch.tensor([0, 1, 2, 1, 0])
    cpu = [f.clone().requires_grad_() for f in features]
    gpu = [f.cuda().requires_grad_() for f in features]
    out_c = torch.ops.fastmask.multi_level_roi_align(cpu, rois, levels, scales, 3, 2, 2, False, deterministic)
    out_g = torch.ops.fastmask.multi_level_roi_align(gpu, rois.cuda(), levels.cuda(), scales, 3, 2, 2, False,
                                                     deterministic)
    assert torch.equal(out_g.cpu(), out_c)
    assert torch.equal(out_c, per_level_reference(features, rois, levels, scales, (3, 2), 2))
    grad = torch.randn_like(out_c)
    out_c.backward(grad)
    out_g.backward(grad.cuda())
    for level in (0, 2):
        if deterministic:
            assert torch.equal(gpu[level].grad.cpu(), cpu[level].grad)
        else:
            torch.testing.assert_close(gpu[level].grad.cpu(), cpu[level].grad)
    assert gpu[1].grad.shape == features[1].shape


@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_matches_cpu(seed, layout, deterministic):
    image_shapes = [(120, 164), (100, 150)]
    feats = fpn_features(2, 40, (128, 192), torch.float64, layout)
    boxes = [random_boxes(n, image_shapes[i], torch.float64) for i, n in enumerate((30, 17))]
    names = ["0", "1", "2", "3"]
    m = MultiScaleRoIAlign(names, 7, 2, deterministic=deterministic)
    cpu_leaves = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    gpu_leaves = OrderedDict((k, v.cuda().requires_grad_()) for k, v in feats.items())
    out_c = m(cpu_leaves, boxes, image_shapes)
    out_g = m(gpu_leaves, [b.cuda() for b in boxes], image_shapes)
    assert torch.equal(out_g.cpu(), out_c)
    grad = torch.randn_like(out_c)
    out_c.backward(grad)
    out_g.backward(grad.cuda())
    for k in names:
        if deterministic:
            assert torch.equal(gpu_leaves[k].grad.cpu(), cpu_leaves[k].grad)
        else:
            torch.testing.assert_close(gpu_leaves[k].grad.cpu(), cpu_leaves[k].grad)

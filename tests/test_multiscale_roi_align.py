"""MultiScaleRoIAlign against torchvision's: level mapping, values, gradients, one launch."""
from collections import OrderedDict

import pytest
import torch
import torchvision

from fastmask.ops import MultiScaleRoIAlign
from fastmask.ops.poolers import map_levels


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


def test_levels_equal_torchvision_level_mapper(seed):
    boxes = random_boxes(500, (800, 1216))
    tv = torchvision.ops.poolers.LevelMapper(2, 5)
    assert torch.equal(map_levels(boxes, 2, 5), tv([boxes]))


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


def test_opcheck(seed):
    feats = [torch.randn(2, 3, 16, 16, requires_grad=True), torch.randn(2, 3, 8, 8, requires_grad=True)]
    rois = torch.tensor([[0, 1.0, 1, 9, 9], [1, 2, 3, 30, 31], [0, 0, 0, 60, 60]])
    levels = torch.tensor([0, 1, 1])
    torch.library.opcheck(
        torch.ops.fastmask.multi_level_roi_align.default, (feats, rois, levels, [0.25, 0.125], 3, 3, 2, False, False)
    )


def test_opcheck_backward(seed):
    grad = torch.randn(3, 3, 2, 2)
    rois = torch.tensor([[0, 1.0, 1, 9, 9], [1, 2, 3, 30, 31], [0, 0, 0, 60, 60]])
    levels = torch.tensor([0, 1, 1])
    for channels_last in (False, True):
        torch.library.opcheck(
            torch.ops.fastmask.multi_level_roi_align_backward.default,
            (grad, rois, levels, [0.25, 0.125], [16, 8], [16, 8], 2, 3, 2, 2, 2, False, channels_last, False),
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
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
    with pytest.raises(ValueError, match="2 feature maps but 1 spatial scales"):
        torch.ops.fastmask.multi_level_roi_align(feats, rois, torch.tensor([0]), [0.25], 2, 2, 2, False)
    with pytest.raises(ValueError, match="same batch size and channels"):
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

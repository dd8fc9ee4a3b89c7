"""RoIAlign against torchvision: values, gradients, dtypes, layouts, edge cases, bad input."""
import math

import pytest
import torch

from fastmask.ops import RoIAlign, roi_align

from conftest import needs_torchvision, random_rois, torchvision

if torchvision is not None:  # (the tests that use it are @needs_torchvision)
    tv_roi_align = torchvision.ops.roi_align


def run_both(x, rois, output_size, scale, sampling_ratio, aligned, layout=torch.contiguous_format):
    """Forward and backward through fastmask (in `layout`) and torchvision (NCHW)."""
    xf = x.detach().contiguous(memory_format=layout).requires_grad_()
    xt = x.detach().clone().requires_grad_()
    out_f = roi_align(xf, rois, output_size, scale, sampling_ratio, aligned)
    out_t = tv_roi_align(xt, rois, output_size, scale, sampling_ratio, aligned)
    grad = torch.randn_like(out_t)
    out_f.backward(grad)
    out_t.backward(grad)
    return out_f, out_t, xf.grad, xt.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels,num_rois", [(5, 24), (16, 24), (16, 1)])
@needs_torchvision
def test_matches_torchvision_bitwise(seed, dtype, aligned, sampling_ratio, layout, channels, num_rois):
    # (16, 24): the NCHW forward transposes to channels_last (many samples per pixel);
    # (5, 24) and (16, 1): it gathers from the NCHW planes directly.
    x = torch.randn(2, channels, 13, 17, dtype=dtype)
    rois = random_rois(num_rois, 2, 13, 17, scale=0.5, dtype=dtype)
    out_f, out_t, g_f, g_t = run_both(x, rois, (4, 3), 0.5, sampling_ratio, aligned, layout)
    assert torch.equal(out_f, out_t)
    assert torch.equal(g_f, g_t)
    if layout == torch.channels_last:
        assert out_f.is_contiguous(memory_format=torch.channels_last)
        assert g_f.is_contiguous(memory_format=torch.channels_last)


@needs_torchvision
def test_box_list_format_equals_tensor_format(seed):
    x = torch.randn(3, 4, 10, 10)
    boxes = [random_rois(n, 1, 10, 10)[:, 1:] for n in (3, 0, 5)]
    out = roi_align(x, boxes, 5, 1.0, 2, True)
    ref = tv_roi_align(x, boxes, 5, 1.0, 2, True)
    assert torch.equal(out, ref)


def edge_case_rois(dtype=torch.float64):
    return torch.tensor(
        [
            [0, -20, -20, -10, -10],  # wholly outside (top-left)
            [1, 50, 50, 60, 70],  # wholly outside (bottom-right)
            [0, -3, -3, 4, 5],  # partly outside
            [1, 2, 2, 2, 2],  # zero size
            [0, 5, 5, 1, 1],  # inverted
            [1, 0, 0, 9, 8],  # exactly the map
            [0, 7.5, 6.5, 8.9, 7.9],  # at the far border
            [1, -1, -1, 0, 0],  # at the near border
        ],
        dtype=dtype,
    )


@needs_torchvision
def test_edge_case_boxes(seed):
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    rois = edge_case_rois()
    for aligned in (False, True):
        for sr in (-1, 2):
            out_f, out_t, g_f, g_t = run_both(x, rois, 3, 1.0, sr, aligned)
            assert torch.equal(out_f, out_t)
            assert torch.equal(g_f, g_t)


@needs_torchvision
def test_huge_boxes_match_torchvision_with_bounded_work(seed):
    # Adaptive grids of hundreds of samples per bin: fastmask only visits the samples that can
    # fall inside the map, yet sums exactly the same values as torchvision.
    x = torch.randn(1, 2, 6, 7)
    rois = torch.tensor([[0, -1500.0, -900.0, 1600.0, 1300.0], [0, 2.0, -3000.0, 4.0, 3000.0]])
    out_f, out_t, g_f, g_t = run_both(x, rois, (2, 3), 1.0, -1, True)
    assert torch.equal(out_f, out_t)
    assert torch.equal(g_f, g_t)


def test_absurd_boxes_do_not_hang_or_allocate():
    x = torch.randn(1, 2, 6, 7, requires_grad=True)
    rois = torch.tensor([[0, -1e30, -1e30, 1e30, 1e30], [0, 0, 0, 1e15, 3.0]])
    out = roi_align(x, rois, 7, 1.0, -1, False)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@needs_torchvision
def test_boxes_whose_extent_overflows_pool_zeros_without_walking_the_grid(dtype):
    # Finite corners 1.5 * max apart: the bin is infinite, every sample coordinate inf or NaN.
    # The sample bounds must say so (an infinite bin once made every kernel walk all 2^31
    # samples of the saturated adaptive grid, seconds per bin).
    big = torch.finfo(dtype).max * 0.75
    x = torch.randn(1, 2, 6, 7, dtype=dtype, requires_grad=True)
    rois = torch.tensor([[0, -big, 0, big, 3], [0, 1, -big, 3, big], [0, 1, 1, 4, 5]], dtype=dtype)
    for aligned in (False, True):
        out = roi_align(x, rois, 7, 1.0, -1, aligned)
        assert torch.equal(out[:2], torch.zeros_like(out[:2]))
        assert torch.equal(out[2:], tv_roi_align(x.detach(), rois[2:], 7, 1.0, -1, aligned))
        x.grad = None
        out[:2].sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))


@needs_torchvision
def test_non_finite_boxes_give_zeros_and_no_gradient():
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    rois = torch.tensor(
        [[0, math.nan, 0, 3, 3], [0, 0, 0, math.inf, 3], [0, -math.inf, 1, 2, 3], [0, 1, 1, 4, 4]]
    )
    out = roi_align(x, rois, 2, 1.0, 2, True)
    assert torch.equal(out[:3], torch.zeros_like(out[:3]))
    assert torch.equal(out[3], tv_roi_align(x.detach(), rois[3:], 2, 1.0, 2, True)[0])
    out[:3].sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@needs_torchvision
def test_half_types_accumulate_in_float32(seed, dtype, tol, layout):
    x = torch.randn(2, 6, 12, 11).to(dtype)
    rois = random_rois(20, 2, 12, 11)
    xf = x.detach().clone().contiguous(memory_format=layout).requires_grad_()
    out = roi_align(xf, rois, 3, 1.0, -1, True)
    assert out.dtype == dtype
    ref = tv_roi_align(x.float(), rois, 3, 1.0, -1, True)
    # The only error is fp16/bf16 rounding of the inputs (exact in float32) and of the output.
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    grad = torch.randn(out.shape).to(dtype)
    out.backward(grad)
    xt = x.detach().float().requires_grad_()
    tv_roi_align(xt, rois, 3, 1.0, -1, True).backward(grad.float())
    assert xf.grad.dtype == dtype
    torch.testing.assert_close(xf.grad.float(), xt.grad, atol=tol, rtol=tol)


@needs_torchvision
def test_non_contiguous_inputs(seed):
    base = torch.randn(2, 8, 14, 12)
    x = base[:, ::2, 1:, :]  # strided view
    rois = random_rois(10, 2, 13, 12)
    rois_nc = rois.t().contiguous().t()  # same values, column-major
    assert not rois_nc.is_contiguous()
    assert torch.equal(roi_align(x, rois_nc, 3, 1.0, 2, False), tv_roi_align(x.contiguous(), rois, 3, 1.0, 2, False))
    g = torch.randn(10, 4, 3, 3).transpose(2, 3)  # non-contiguous incoming gradient
    xf = x.detach().clone().requires_grad_()
    xt = x.detach().clone().requires_grad_()
    roi_align(xf, rois, 3, 1.0, 2, False).backward(g)
    tv_roi_align(xt, rois, 3, 1.0, 2, False).backward(g)
    assert torch.equal(xf.grad, xt.grad)


def test_empty_inputs():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    for boxes in (torch.zeros(0, 5), [torch.zeros(0, 4), torch.zeros(0, 4)], []):
        out = roi_align(x, boxes, 2, 1.0, 2, True)
        assert out.shape == (0, 3, 2, 2)
        out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty_map = torch.randn(1, 3, 0, 4)
    assert torch.equal(roi_align(empty_map, torch.tensor([[0.0, 0, 0, 1, 1]]), 2), torch.zeros(1, 3, 2, 2))


@needs_torchvision
def test_module_and_repr():
    m = RoIAlign((3, 3), 0.5, 2, aligned=True)
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0.0, 1, 1, 9, 9]])
    assert torch.equal(m(x, rois), torchvision.ops.RoIAlign((3, 3), 0.5, 2, aligned=True)(x, rois))
    assert "RoIAlign(output_size=(3, 3)" in repr(m)


def test_gradcheck():
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.9, 5.2], [1, 1.1, -0.4, 6.5, 3.3], [1, 2.2, 2.1, 2.9, 5.7]], dtype=torch.float64)
    for aligned in (False, True):
        for sr in (-1, 2):
            assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (3, 2), 0.9, sr, aligned), (x,))
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 2, 1.0, 2, True), (xc,))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
# `deterministic` selects a CUDA backward kernel; the CPU ignores it.
DETERMINISTIC = {"cpu": (False,), "cuda": (False, True)}


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(seed, device):
    x = torch.randn(2, 3, 9, 8, device=device)
    rois = random_rois(6, 2, 9, 8, device=device)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout).requires_grad_()
        for deterministic in DETERMINISTIC[device]:
            torch.library.opcheck(torch.ops.fastmask.roi_align.default, (xl, rois, 1.0, 3, 2, 2, True, deterministic))
    g = torch.randn(6, 3, 3, 2, device=device)
    for channels_last in (False, True):
        for deterministic in DETERMINISTIC[device]:
            torch.library.opcheck(
                torch.ops.fastmask.roi_align_backward.default,
                (g, rois, 1.0, 3, 2, 2, 3, 9, 8, 2, True, channels_last, deterministic),
            )


def test_torch_compile_fullgraph(seed):
    x = torch.randn(2, 4, 10, 10)
    rois = random_rois(5, 2, 10, 10)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def pool(x, rois):
        return roi_align(x, rois, 3, 1.0, 2, True).relu()

    assert torch.equal(pool(x, rois), roi_align(x, rois, 3, 1.0, 2, True).relu())


def test_torchscript(seed):
    @torch.jit.script
    def pool(x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastmask.roi_align(x, rois, 1.0, 2, 2, 2, True, False)

    x = torch.randn(1, 2, 5, 5)
    rois = torch.tensor([[0.0, 0, 0, 4, 4]])
    assert torch.equal(pool(x, rois), roi_align(x, rois, 2, 1.0, 2, True))


def test_autocast_half_features_float_boxes():
    x = torch.randn(1, 3, 8, 8)
    rois = torch.tensor([[0.0, 1, 1, 6, 6]])
    conv = torch.nn.Conv2d(3, 4, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = conv(x)
        out = roi_align(feats, rois, 2, 1.0, 2, True)
    assert feats.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert conv.weight.grad is not None


def test_deterministic_flag_is_accepted_on_cpu(seed):
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    rois = random_rois(4, 1, 6, 6)
    a = roi_align(x, rois, 2, deterministic=True)
    torch.use_deterministic_algorithms(True)
    try:
        b = roi_align(x, rois, 2)
        b.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda x, r: roi_align(x[0], r, 2), ValueError, "input must be a 4-D"),
        (lambda x, r: roi_align(x, r[:, 1:], 2), ValueError, r"boxes must be a \[K, 5\]"),
        (lambda x, r: roi_align(x, r.long(), 2), TypeError, "floating-point"),
        (lambda x, r: roi_align(x, [r], 2), ValueError, r"boxes\[0\] must be a \[K, 4\]"),
        (lambda x, r: roi_align(x, r, 0), ValueError, "output_size must be positive"),
        (lambda x, r: roi_align(x, r, (2, -1)), ValueError, "output_size must be positive"),
        (lambda x, r: roi_align(x, r, 2, sampling_ratio=10**9), ValueError, "sampling_ratio must be <= 128"),
        (lambda x, r: roi_align(x, r, 2, spatial_scale=0.0), ValueError, "spatial_scale"),
        (lambda x, r: roi_align(x, r, 2, spatial_scale=math.nan), ValueError, "spatial_scale"),
        (lambda x, r: roi_align(x.long(), r, 2), TypeError, "input must be float32"),
        (lambda x, r: roi_align(x, r, "7"), TypeError, "output_size"),
        (lambda x, r: roi_align(x, "boxes", 2), TypeError, "boxes must be"),
    ],
)
def test_bad_input_raises_clear_errors(call, exc, match):
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0.0, 1, 1, 5, 5]])
    with pytest.raises(exc, match=match):
        call(x, rois)


@pytest.mark.parametrize("batch_index", [2.0, -1.0, 1e20, math.nan, math.inf])
def test_bad_batch_index_raises_on_cpu(batch_index):
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0.0, 1, 1, 5, 5], [batch_index, 1, 1, 5, 5]])
    with pytest.raises(IndexError, match=r"rois\[1, 0\] \(batch index\)"):
        roi_align(x, rois, 2)


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("aligned", [False, True])
@needs_torchvision
def test_cuda_equals_cpu(seed, dtype, layout, aligned):
    x = torch.randn(2, 7, 15, 13, dtype=dtype)
    rois = random_rois(40, 2, 15, 13, dtype=dtype)
    cpu = roi_align(x, rois, 4, 1.0, -1, aligned)
    gpu = roi_align(x.cuda().contiguous(memory_format=layout), rois.cuda(), 4, 1.0, -1, aligned)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)
    tv = tv_roi_align(x.cuda(), rois.cuda(), 4, 1.0, -1, aligned)
    torch.testing.assert_close(gpu, tv)


@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_backward_deterministic_equals_cpu_and_atomic_is_close(seed, layout):
    x = torch.randn(2, 33, 17, 19, dtype=torch.float64)
    rois = random_rois(60, 2, 17, 19, dtype=torch.float64)
    g = torch.randn(60, 33, 5, 5, dtype=torch.float64)
    xc = x.clone().requires_grad_()
    roi_align(xc, rois, 5, 1.0, 2, True).backward(g)

    def cuda_grad(deterministic):
        xg = x.cuda().contiguous(memory_format=layout).requires_grad_()
        roi_align(xg, rois.cuda(), 5, 1.0, 2, True, deterministic=deterministic).backward(g.cuda())
        return xg.grad

    det = [cuda_grad(True) for _ in range(3)]
    assert all(torch.equal(d, det[0]) for d in det)
    assert torch.equal(det[0].cpu(), xc.grad)
    torch.testing.assert_close(cuda_grad(False).cpu(), xc.grad)


@pytest.mark.cuda
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_cuda_edge_case_boxes_equal_cpu(seed, aligned, sampling_ratio):
    # Includes boxes outside the map, zero-size and inverted boxes (which sample, in aligned
    # mode with a fixed sampling_ratio) and boxes at the borders.
    x = torch.randn(2, 40, 8, 9, dtype=torch.float64)
    rois = torch.cat([edge_case_rois(), random_rois(30, 2, 8, 9, dtype=torch.float64)])
    g = torch.randn(rois.shape[0], 40, 3, 3, dtype=torch.float64)
    xc = x.clone().requires_grad_()
    out_c = roi_align(xc, rois, 3, 1.0, sampling_ratio, aligned)
    out_c.backward(g)
    for deterministic in (True, False):
        xg = x.cuda().requires_grad_()
        out_g = roi_align(xg, rois.cuda(), 3, 1.0, sampling_ratio, aligned, deterministic=deterministic)
        out_g.backward(g.cuda())
        assert torch.equal(out_g.cpu(), out_c)
        if deterministic:
            assert torch.equal(xg.grad.cpu(), xc.grad)
        else:
            torch.testing.assert_close(xg.grad.cpu(), xc.grad)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types(seed, dtype):
    x = torch.randn(2, 16, 12, 12, device="cuda").to(dtype)
    rois = random_rois(30, 2, 12, 12, device="cuda")
    out = roi_align(x, rois, 3, 1.0, 2, True)
    ref = roi_align(x.cpu(), rois.cpu(), 3, 1.0, 2, True)
    torch.testing.assert_close(out.cpu().float(), ref.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.cuda
def test_cuda_bad_batch_index_gives_zeros_without_sync():
    x = torch.randn(2, 3, 8, 8, device="cuda")
    rois = torch.tensor([[5.0, 1, 1, 5, 5], [math.nan, 1, 1, 5, 5]], device="cuda")
    assert torch.equal(roi_align(x, rois, 2).cpu(), torch.zeros(2, 3, 2, 2))


@pytest.mark.cuda
def test_cuda_batch_index_of_image_zero_in_an_empty_batch_gives_zeros():
    # -0.5 truncates to image 0, which a batch of 0 images lacks: zeros, no read of the features.
    x = torch.randn(0, 3, 8, 8, device="cuda")
    rois = torch.tensor([[-0.5, 1, 1, 5, 5], [0.0, 1, 1, 5, 5]], device="cuda")
    assert torch.equal(roi_align(x, rois, 2).cpu(), torch.zeros(2, 3, 2, 2))
    torch.cuda.synchronize()


@needs_torchvision
def test_fractional_batch_index_truncates_like_torchvision():
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[-0.5, 1, 1, 5, 5], [1.9, 1, 1, 5, 5]])
    assert torch.equal(roi_align(x, rois, 2), tv_roi_align(x, rois, 2))


@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("multi_level", [False, True])
def test_cuda_deterministic_backward_float32_equals_cpu_bitwise(seed, layout, multi_level):
    # float32, several images, C = 257 (the kernel's 256 threads then take two channels each
    # for some), and with multi_level, three levels of which one is not a multiple of the
    # 4-row bands. The CPU backward is torchvision's order of additions; so must this be.
    batch, channels, output = 3, 257, (4, 3)
    shapes = [(21, 18), (11, 9), (5, 5)] if multi_level else [(21, 18)]
    scales = [1.0, 0.5, 0.25][: len(shapes)]
    rois = random_rois(60, batch, 21, 18)
    levels = torch.randint(0, len(shapes), (60,))
    grad = torch.randn(60, channels, *output)
    channels_last = layout == torch.channels_last
    for sampling_ratio, aligned in ((2, True), (-1, False), (3, True)):

        def backward(device, deterministic):
            args = (grad.to(device), rois.to(device))
            if multi_level:
                return torch.ops.fastmask.multi_level_roi_align_backward(
                    *args, levels.to(device), scales, [h for h, _ in shapes], [w for _, w in shapes], batch,
                    channels, *output, sampling_ratio, aligned, channels_last, deterministic)
            h, w = shapes[0]
            return [torch.ops.fastmask.roi_align_backward(*args, 1.0, *output, batch, channels, h, w, sampling_ratio,
                                                          aligned, channels_last, deterministic)]

        cpu = backward("cpu", False)
        runs = [backward("cuda", True) for _ in range(2)]
        for level, expected in enumerate(cpu):
            assert expected.abs().sum() > 0
            for run in runs:
                assert run[level].is_contiguous(memory_format=layout)
                assert torch.equal(run[level].cpu(), expected), (sampling_ratio, aligned, level)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_half_backward_against_float32_cpu(seed, dtype, deterministic, layout):
    # Both CUDA kernels accumulate fp16/bf16 gradients in float32 and round once at the end, as
    # the CPU does. The deterministic kernel adds in the CPU's order, so its float32 sums are
    # the float32 CPU's and its result is that rounded to `dtype`, exactly. The atomic one
    # reorders float32 additions (relative error ~1e-6), which can move the final rounding by
    # one step: within one ulp of `dtype` (eps * |value|), plus 1e-5 for float32 sums near 0.
    grad = torch.randn(40, 24, 3, 3).to(dtype)  # exact in float32
    rois = random_rois(40, 2, 14, 13)
    args = (1.0, 3, 3, 2, 24, 14, 13, 2, True)
    ref = torch.ops.fastmask.roi_align_backward(grad.float(), rois, *args, False, False)
    got = torch.ops.fastmask.roi_align_backward(grad.cuda(), rois.cuda(), *args, layout == torch.channels_last,
                                                deterministic)
    assert got.dtype == dtype and got.is_contiguous(memory_format=layout)
    if deterministic:
        assert torch.equal(got.cpu(), ref.to(dtype))
    else:
        torch.testing.assert_close(got.cpu().float(), ref, rtol=torch.finfo(dtype).eps, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
def test_cuda_huge_boxes_adaptive_sampling_equal_cpu(seed, dtype, aligned):
    # Adaptive grids of 10^3..10^6 samples per bin: the CUDA kernels bound the samples they visit
    # by the map (forward, atomic backward) and by the band (deterministic backward), and must
    # still add exactly the CPU's samples. The last box is inverted (no samples when adaptive).
    x = torch.randn(2, 40, 9, 11, dtype=dtype)
    rois = torch.tensor(
        [[0, -1500, -900, 1600, 1300], [1, 2, -3000, 4, 3000], [0, -2e6, 1, 2e6, 5], [1, -1e5, -1e5, 1e5, 1e5],
         [1, 3, 4, -9e4, -8e4], [0, -7e5, -3, 7e5, 12]], dtype=dtype)
    grad = torch.randn(rois.shape[0], 40, 3, 2, dtype=dtype)
    xc = x.clone().requires_grad_()
    out_c = roi_align(xc, rois, (3, 2), 1.0, -1, aligned)
    out_c.backward(grad)
    xg = x.cuda().requires_grad_()
    out_g = roi_align(xg, rois.cuda(), (3, 2), 1.0, -1, aligned, deterministic=True)
    out_g.backward(grad.cuda())
    assert torch.equal(out_g.cpu(), out_c)
    assert torch.equal(xg.grad.cpu(), xc.grad)


@pytest.mark.cuda
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_stride_zero_gradient(seed, deterministic, layout):
    # out.sum().backward() hands the backward an expanded (all strides 0) gradient.
    x = torch.randn(2, 37, 12, 10, dtype=torch.float64)
    rois = random_rois(25, 2, 12, 10, dtype=torch.float64)
    xc = x.clone().requires_grad_()
    roi_align(xc, rois, 3, 1.0, 2, True).sum().backward()
    xg = x.cuda().contiguous(memory_format=layout).requires_grad_()
    out = roi_align(xg, rois.cuda(), 3, 1.0, 2, True, deterministic=deterministic)
    assert torch.equal(out.cpu(), roi_align(x, rois, 3, 1.0, 2, True))
    out.sum().backward()
    if deterministic:
        assert torch.equal(xg.grad.cpu(), xc.grad)
    else:
        torch.testing.assert_close(xg.grad.cpu(), xc.grad)


@pytest.mark.cuda
def test_cuda_forward_and_deterministic_backward_do_not_sync(seed):
    x = torch.randn(2, 8, 12, 10, device="cuda", requires_grad=True)
    rois = random_rois(30, 2, 12, 10, device="cuda")
    levels = torch.randint(0, 2, (30,), device="cuda")
    feats = [torch.randn(2, 8, 12, 10, device="cuda", requires_grad=True),
             torch.randn(2, 8, 6, 5, device="cuda", requires_grad=True)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        roi_align(x, rois, 3, 1.0, 2, True, deterministic=True).sum().backward()
        torch.ops.fastmask.multi_level_roi_align(feats, rois, levels, [1.0, 0.5], 3, 3, 2, True, True).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.grad.abs().sum() > 0 and feats[1].grad.abs().sum() > 0


@pytest.mark.cuda
def test_cuda_graph_replay_of_deterministic_backward_equals_eager(seed):
    # The deterministic backward buckets the RoIs with sync-free ops: forward and backward capture
    # in one CUDA graph, and replays on new inputs give eager's bits.
    def step(x, rois, grad):
        pooled = roi_align(x, rois, 3, 0.25, 2, True, deterministic=True)
        return pooled, torch.autograd.grad(pooled, x, grad)[0]

    cases = []
    for _ in range(3):
        x = torch.randn(2, 16, 20, 24).contiguous(memory_format=torch.channels_last)
        cases.append((x, random_rois(60, 2, 20, 24, scale=0.25), torch.randn(60, 16, 3, 3)))
    x, rois, grad = (t.cuda() for t in cases[0])
    x.requires_grad_()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step(x, rois, grad)  # warm-up
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        pooled, grad_x = step(x, rois, grad)
    for case in cases[1:] + cases[:1]:
        with torch.no_grad():
            for target, value in zip((x, rois, grad), case):
                target.copy_(value)
        graph.replay()
        fresh = case[0].cuda().requires_grad_()
        expected = step(fresh, case[1].cuda(), case[2].cuda())
        assert torch.equal(pooled, expected[0]) and torch.equal(grad_x, expected[1])


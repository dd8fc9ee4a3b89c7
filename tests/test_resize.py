"""resize_bilinear against F.interpolate, preprocess_images / GeneralizedRCNNTransform against
torchvision's transform: parity on fresh random inputs, edge cases, opcheck, bad input."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import needs_torchvision, torchvision
from fastmask.ops import boxes_to_original, preprocess_images, resize_bilinear

if torchvision is not None:  # (the tests that use them are @needs_torchvision)
    from torchvision.models.detection.transform import GeneralizedRCNNTransform as TorchvisionTransform

    from fastmask.ops import GeneralizedRCNNTransform  # extends torchvision's

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

SIZES = [  # (in_h, in_w, out_h, out_w): up, down, mixed, odd, 1-pixel, equal sides
    (7, 9, 13, 5), (28, 28, 57, 33), (33, 17, 8, 40), (1, 1, 5, 3), (5, 4, 1, 1), (30, 31, 30, 17), (5, 40, 9, 40),
    (48, 64, 80, 107),
]


def interpolate(x, **kwargs):
    return F.interpolate(x, mode="bilinear", align_corners=False, **kwargs)


def assert_same(ours, ref):
    """float32/float64: F.interpolate's bits. PyTorch's CPU kernel rounds differently by CPU
    capability (fused multiply-adds in its AVX2/AVX-512 builds only) and takes another kernel for
    small outputs, channels_last inputs of more than 3 channels and 3-channel inputs on one
    thread; fastmask follows it in each case (common/linear_interp.h), so the suite checks
    equality under every ATEN_CPU_CAPABILITY and thread count."""
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    differ = (ours != ref) & ~(ours.isnan() & ref.isnan())
    assert not differ.any(), f"{int(differ.sum())} of {ours.numel()} values differ, max {(ours - ref).abs().max()}"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_interpolate(seed, size, channels_last):
    h, w, oh, ow = size
    x = torch.randn(2, 3, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours = resize_bilinear(x, (oh, ow))
    assert_same(ours, interpolate(x, size=(oh, ow)))
    if channels_last and h * w > 1:  # a 1x1 input is both layouts: NCHW out
        assert ours.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("threads", [1, 2])
def test_bit_equal_on_the_detection_resize(seed, threads):
    # The resize of GeneralizedRCNNTransform (480 x 640 -> 800 x 1066): PyTorch's separable kernel on
    # several threads, its channels-last kernel on one (3 channels).
    x = torch.rand(1, 3, 480, 640)
    with num_threads(threads):
        assert_same(resize_bilinear(x, (800, 1066)), interpolate(x, size=(800, 1066)))


class num_threads:
    def __init__(self, n):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


# (channels, in, out, channels_last): each of PyTorch's CPU kernels and the choice between them.
KERNEL_CASES = [
    (3, (40, 50), (100, 130), False),   # separable (large output, 3 channels on >1 thread)
    (3, (40, 50), (60, 60), False),     # channels-last kernel: height + width <= 128
    (1, (28, 28), (50, 60), False),     # a mask, small output (scalar loop of that kernel)
    (12, (20, 30), (70, 90), True),     # channels_last, > 3 channels: 8 vector lanes + 4 in its scalar loop
    (20, (9, 13), (40, 31), True),      # two vectors + 4
    (5, (30, 30), (90, 70), False),     # NCHW with > 3 channels, large output: separable
    (4, (16, 16), (200, 20), True),     # channels_last, 4 channels: all in the scalar loop
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", KERNEL_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_torch_kernel_bit_for_bit(seed, case, threads, dtype):
    channels, (h, w), size, channels_last = case
    x = torch.randn(2, channels, h, w, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with num_threads(threads):
        assert_same(resize_bilinear(x, size), interpolate(x, size=size))
        assert_same(resize_bilinear(x, scale_factor=1.37), interpolate(x, scale_factor=1.37))


@pytest.mark.parametrize("scale_factor", [1.7, 0.3, (2.0, 0.5), 1.0, 2.5])
@pytest.mark.parametrize("recompute", [None, False, True])
def test_scale_factor_forms(seed, scale_factor, recompute):
    x = torch.randn(1, 2, 23, 31)
    ref = interpolate(x, scale_factor=scale_factor, recompute_scale_factor=recompute)
    ours = resize_bilinear(x, scale_factor=scale_factor, recompute_scale_factor=recompute)
    assert_same(ours, ref)


def test_non_contiguous_input(seed):
    x = torch.randn(2, 3, 20, 30)[:, :, ::2, 1::3]
    assert_same(resize_bilinear(x, (17, 23)), interpolate(x, size=(17, 23)))
    y = torch.randn(2, 3, 70, 90)[:, :, ::2, 1::3]
    assert_same(resize_bilinear(y, (80, 71)), interpolate(y, size=(80, 71)))


# PyTorch keeps fp16/bf16 weights in the half type; fastmask computes in float32 and rounds once.
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
def test_other_dtypes(seed, dtype, atol):
    x = torch.randn(2, 3, 19, 26).to(dtype)
    ours = resize_bilinear(x, (31, 14))
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.double(), interpolate(x, size=(31, 14)).double(), rtol=0, atol=atol)


def test_uint8_within_one(seed):
    x = torch.randint(0, 256, (2, 3, 21, 34), dtype=torch.uint8)
    for size in ((40, 51), (9, 13)):
        ours, ref = resize_bilinear(x, size), interpolate(x, size=size)
        assert ours.dtype == torch.uint8
        assert (ours.int() - ref.int()).abs().max() <= 1


def test_empty_batch():
    assert resize_bilinear(torch.randn(0, 3, 4, 5), (8, 9)).shape == (0, 3, 8, 9)


def test_opcheck_resize(seed):
    x = torch.randn(2, 3, 9, 11)
    torch.library.opcheck(torch.ops.fastmask.resize_bilinear.default, (x, 13, 7, None, None))
    torch.library.opcheck(torch.ops.fastmask.resize_bilinear.default,
                          (x.contiguous(memory_format=torch.channels_last), 5, 20, 0.5, 2.0))


def test_resize_bad_input():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="4-D"):
        resize_bilinear(torch.randn(3, 8, 8), (4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        resize_bilinear(x, (4, 4), scale_factor=2.0)
    with pytest.raises(ValueError, match="exactly one"):
        resize_bilinear(x)
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(x, (0, 4))
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(x, scale_factor=0.01)
    with pytest.raises(ValueError, match="scale_factor"):
        resize_bilinear(x, scale_factor=-1.0)
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(torch.randn(1, 3, 0, 8), (4, 4))
    with pytest.raises(TypeError, match="dtype|uint8"):
        resize_bilinear(x.int(), (4, 4))
    with pytest.raises(TypeError, match="Tensor"):
        resize_bilinear([1, 2], (4, 4))
    with pytest.raises(ValueError, match="size"):
        resize_bilinear(x, (4, 4, 4))


def random_images(sizes, dtype=torch.float32):
    return [torch.rand(3, h, w).to(dtype) for h, w in sizes]


IMAGE_SIZES = [[(480, 640), (600, 800)], [(37, 91)], [(1, 1), (3, 2)], [(301, 199), (120, 999), (64, 64)],
               [(800, 1000)]]  # the last one keeps its size: the copy path


@pytest.mark.parametrize("sizes", IMAGE_SIZES)
@needs_torchvision
def test_preprocess_matches_torchvision(seed, sizes):
    images = random_images(sizes)
    ref, _ = TorchvisionTransform(800, 1333, MEAN, STD).eval()(images)
    batch, image_sizes = preprocess_images(images, 800, 1333, MEAN, STD)
    assert image_sizes == ref.image_sizes
    assert batch.shape == ref.tensors.shape
    assert_same(batch, ref.tensors)
    module_out, _ = GeneralizedRCNNTransform(800, 1333, MEAN, STD).eval()(images)
    assert torch.equal(module_out.tensors, batch) and module_out.image_sizes == ref.image_sizes


@pytest.mark.parametrize("threads", [1, 2])
@needs_torchvision
def test_preprocess_bit_equal_on_the_benchmark_images(seed, threads):
    images = random_images([(480, 640), (600, 800)])
    with num_threads(threads):
        ref, _ = TorchvisionTransform(800, 1333, MEAN, STD).eval()(images)
        assert_same(preprocess_images(images, 800, 1333, MEAN, STD)[0], ref.tensors)


@needs_torchvision
def test_preprocess_uint8_hwc(seed):
    decoded = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8) for h, w in [(97, 130), (64, 33)]]
    as_float = [im.permute(2, 0, 1).float() / 255 for im in decoded]
    ref, _ = TorchvisionTransform(200, 333, MEAN, STD).eval()(as_float)
    batch, image_sizes = preprocess_images(decoded, 200, 333, MEAN, STD)
    assert batch.dtype == torch.float32 and image_sizes == ref.image_sizes
    assert_same(batch, ref.tensors)
    # a [C, H, W] uint8 image (torchvision.io) as a view
    chw = [im.permute(2, 0, 1).contiguous() for im in decoded]
    view_batch, _ = preprocess_images([im.permute(1, 2, 0) for im in chw], 200, 333, MEAN, STD)
    assert torch.equal(view_batch, batch)


@needs_torchvision
def test_preprocess_strided_float_images(seed):
    images = [torch.rand(45, 61, 3).permute(2, 0, 1), torch.rand(3, 80, 70)[:, ::2, 1::2]]
    ref, _ = TorchvisionTransform(60, 100, MEAN, STD).eval()(images)
    assert_same(preprocess_images(images, 60, 100, MEAN, STD)[0], ref.tensors)


@needs_torchvision
def test_preprocess_float64(seed):
    images = random_images([(50, 70), (33, 40)], torch.float64)
    ref, _ = TorchvisionTransform(64, 100, MEAN, STD).eval()(images)
    assert_same(preprocess_images(images, 64, 100, MEAN, STD)[0], ref.tensors)


@needs_torchvision
def test_preprocess_float16(seed):
    # PyTorch keeps fp16 weights in fp16; fastmask computes in float32 and rounds once.
    images = random_images([(50, 70), (33, 40)], torch.float16)
    ref, _ = TorchvisionTransform(64, 100, MEAN, STD).eval()(images)
    batch, _ = preprocess_images(images, 64, 100, MEAN, STD)
    assert batch.dtype == torch.float16
    torch.testing.assert_close(batch.double(), ref.tensors.double(), rtol=0, atol=2e-2)


@needs_torchvision
def test_paper_square_canvas(seed):
    images = random_images([(480, 640), (600, 500)])
    batch, image_sizes = preprocess_images(images, 800, 1024, MEAN, STD, canvas_size=(1024, 1024))
    assert batch.shape == (2, 3, 1024, 1024)
    assert image_sizes == [(768, 1024), (960, 800)]
    # torchvision with size_divisible=1024 pads to the same canvas here
    ref, _ = TorchvisionTransform(800, 1024, MEAN, STD, size_divisible=1024).eval()(images)
    assert_same(batch, ref.tensors)


@needs_torchvision
def test_fixed_size_and_size_divisible(seed):
    images = random_images([(45, 61), (70, 30)])
    for kwargs in ({"fixed_size": (50, 40)}, {"size_divisible": 1}, {"size_divisible": 7}):
        ref, _ = TorchvisionTransform(60, 100, MEAN, STD, **kwargs).eval()(images)
        ours, _ = GeneralizedRCNNTransform(60, 100, MEAN, STD, **kwargs).eval()(images)
        assert ours.image_sizes == ref.image_sizes
        assert_same(ours.tensors, ref.tensors)


def random_targets(sizes):
    targets = []
    for h, w in sizes:
        xy = torch.rand(5, 2) * torch.tensor([w, h]) * 0.7
        boxes = torch.cat([xy, xy + torch.rand(5, 2) * 20 + 1], 1)
        targets.append({"boxes": boxes, "labels": torch.randint(1, 5, (5,)),
                        "masks": torch.randint(0, 2, (5, h, w), dtype=torch.uint8),
                        "keypoints": torch.cat([xy[:, None].expand(5, 3, 2), torch.ones(5, 3, 1)], 2)})
    return targets


@needs_torchvision
def test_training_mode_random_sizes_and_targets(seed):
    sizes = [(40, 50), (63, 31), (20, 70)]
    images, targets = random_images(sizes), random_targets(sizes)
    ref_module = TorchvisionTransform((32, 48, 64), 100, MEAN, STD).train()
    ours_module = GeneralizedRCNNTransform((32, 48, 64), 100, MEAN, STD).train()
    torch.manual_seed(seed)
    ref, ref_targets = ref_module(images, targets)
    torch.manual_seed(seed)
    ours, ours_targets = ours_module(images, targets)
    assert ours.image_sizes == ref.image_sizes
    assert_same(ours.tensors, ref.tensors)
    for a, b in zip(ours_targets, ref_targets):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert targets[0]["boxes"] is not ours_targets[0]["boxes"]  # inputs untouched


@needs_torchvision
def test_postprocess_matches_torchvision(seed):
    ref_module = TorchvisionTransform(64, 100, MEAN, STD).eval()
    ours_module = GeneralizedRCNNTransform(64, 100, MEAN, STD).eval()
    original, resized = [(50, 70), (33, 40)], [(64, 89), (64, 77)]

    def result():
        g = torch.Generator().manual_seed(seed)
        out = []
        for h, w in resized:
            xy = torch.rand(6, 2, generator=g) * torch.tensor([w, h]) * 0.8
            out.append({"boxes": torch.cat([xy, xy + 5 + torch.rand(6, 2, generator=g) * 10], 1),
                        "masks": torch.rand(6, 1, 28, 28, generator=g)})
        return out

    ref = ref_module.postprocess(result(), resized, original)
    ours = ours_module.postprocess(result(), resized, original)
    for a, b in zip(ours, ref):
        assert torch.equal(a["boxes"], b["boxes"])
        torch.testing.assert_close(a["masks"], b["masks"], rtol=0, atol=1e-5)
    boxes = torch.tensor([[10.0, 20, 30, 40]])
    expected = torch.tensor([[10 * 70 / 89, 20 * 50 / 64, 30 * 70 / 89, 40 * 50 / 64]])
    torch.testing.assert_close(boxes_to_original(boxes, (64, 89), (50, 70)), expected)


def test_opcheck_preprocess(seed):
    images = random_images([(9, 13), (12, 7)])
    torch.library.opcheck(torch.ops.fastmask.preprocess_images.default,
                          (images, [15, 20, 20, 12], MEAN, STD, 32, 32))
    decoded = [torch.randint(0, 256, (9, 13, 3), dtype=torch.uint8)]
    torch.library.opcheck(torch.ops.fastmask.preprocess_images.default, (decoded, [15, 20], MEAN, STD, 16, 24))


def test_preprocess_bad_input():
    image = torch.rand(3, 20, 30)
    with pytest.raises(TypeError, match="non-empty list"):
        preprocess_images([])
    with pytest.raises(TypeError, match="non-empty list"):
        preprocess_images(image)
    with pytest.raises(ValueError, match="3d tensors"):
        preprocess_images([torch.rand(20, 30)])
    with pytest.raises(ValueError, match=r"permute\(1, 2, 0\)"):
        preprocess_images([torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)])
    with pytest.raises(TypeError, match="int32"):
        preprocess_images([torch.zeros(3, 20, 30, dtype=torch.int32)])
    with pytest.raises(TypeError, match="one dtype"):
        preprocess_images([image, image.double()])
    with pytest.raises(ValueError, match="does not fit"):
        preprocess_images([image], 800, 1333, canvas_size=(512, 512))
    with pytest.raises(ValueError, match="one value per channel"):
        preprocess_images([image], image_mean=[0.5, 0.5], image_std=[0.2, 0.2])
    with pytest.raises(ValueError, match="channels"):
        preprocess_images([image, torch.rand(1, 20, 30)])
    with pytest.raises(ValueError, match="empty"):
        preprocess_images([torch.rand(3, 0, 30)])
    with pytest.raises(ValueError, match="at most 16 channels"):
        preprocess_images([torch.rand(17, 5, 5)], image_mean=[0.5] * 17, image_std=[0.2] * 17)


@pytest.mark.cuda
def test_cuda_matches_cpu(seed):
    x = torch.randn(2, 3, 37, 51)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        for kwargs in ({"size": (80, 107)}, {"size": (9, 13)}, {"scale_factor": 1.7}):
            torch.testing.assert_close(resize_bilinear(xl.cuda(), **kwargs).cpu(), resize_bilinear(xl, **kwargs),
                                       rtol=0, atol=1e-6)
    for dtype in (torch.float16, torch.bfloat16):
        torch.testing.assert_close(resize_bilinear(x.to(dtype).cuda(), (50, 60)).cpu().float(),
                                   resize_bilinear(x.to(dtype), (50, 60)).float(), rtol=0, atol=3e-2)
    u8 = torch.randint(0, 256, (2, 3, 21, 34), dtype=torch.uint8)
    assert (resize_bilinear(u8.cuda(), (40, 51)).cpu().int() - resize_bilinear(u8, (40, 51)).int()).abs().max() <= 1
    images = random_images([(480, 640), (600, 800)])
    ours, sizes = preprocess_images([im.cuda() for im in images])
    ref, ref_sizes = preprocess_images(images)
    assert sizes == ref_sizes
    torch.testing.assert_close(ours.cpu(), ref, rtol=0, atol=1e-6)
    decoded = [torch.randint(0, 256, (97, 130, 3), dtype=torch.uint8)]
    torch.testing.assert_close(preprocess_images([decoded[0].cuda()])[0].cpu(), preprocess_images(decoded)[0],
                               rtol=0, atol=1e-6)


# The CPU kernel follows PyTorch's kernel choice and its rounding on this CPU (common/linear_interp.h),
# the CUDA kernel the fused separable form: a few ulps apart at most.
CUDA_VS_CPU = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
def test_cuda_resize_beyond_the_grid_row_limit(seed):
    # [64, 3, 400, 40] out: 76,800 rows, more than a grid's 65,535 in y, so rows are walked by a
    # grid-stride loop. New outputs are NaN-filled first (deterministic mode): an unwritten row
    # shows.
    x = torch.randn(64, 3, 157, 29)
    torch.use_deterministic_algorithms(True)
    try:
        ours = resize_bilinear(x.cuda(), (400, 40))
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(ours.cpu(), resize_bilinear(x, (400, 40)), **CUDA_VS_CPU)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_resize_and_preprocess_on_the_second_gpu(seed):
    # The current device stays cuda:0: the ops must run on their inputs' device (device guard).
    device = torch.device("cuda", 1)
    x = torch.randn(2, 3, 37, 51)
    ours = resize_bilinear(x.to(device), (80, 107))
    assert ours.device == device
    torch.testing.assert_close(ours.cpu(), resize_bilinear(x, (80, 107)), **CUDA_VS_CPU)
    images = random_images([(48, 64), (60, 80)])
    batch, sizes = preprocess_images([im.to(device) for im in images], 96, 160)
    ref, ref_sizes = preprocess_images(images, 96, 160)
    assert batch.device == device and sizes == ref_sizes
    torch.testing.assert_close(batch.cpu(), ref, **CUDA_VS_CPU)


@needs_torchvision
def test_module_takes_a_batch_tensor(seed):
    images = torch.rand(2, 3, 30, 40)
    ref, _ = TorchvisionTransform(64, 100, MEAN, STD).eval()(images)
    ours, _ = GeneralizedRCNNTransform(64, 100, MEAN, STD).eval()(images)
    assert ours.image_sizes == ref.image_sizes
    assert_same(ours.tensors, ref.tensors)


def test_torch_compile_fullgraph(seed):
    x, a, b = torch.rand(1, 3, 10, 11), torch.rand(3, 30, 40), torch.rand(3, 20, 50)
    resize = torch.compile(lambda v: resize_bilinear(v, (20, 30)), fullgraph=True)
    assert torch.equal(resize(x), resize_bilinear(x, (20, 30)))
    preprocess = torch.compile(lambda u, v: preprocess_images([u, v], 64, 100)[0], fullgraph=True)
    assert torch.equal(preprocess(a, b), preprocess_images([a, b], 64, 100)[0])


def test_ops_import_without_torchvision():
    # torchvision is not a requirement of fastmask: only the transform module needs it.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'torchvision':\n"
            "            raise ImportError('no torchvision')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import fastmask.ops as ops\n"
            "ops.preprocess_images, ops.paste_masks_in_image, ops.resize_bilinear, ops.boxes_to_original\n")
    subprocess.run([sys.executable, "-c", code], check=True)

"""paste_masks_in_image against torchvision's: random masks and boxes, boxes partly or wholly
outside the image, tiny, one-pixel and huge boxes, one mask into a large image, on 1 and 2
threads, no masks, dtypes, thresholding, opcheck, bad input. Where torchvision is not installed,
against a transcription of its paste (`reference`), which a torchvision test checks."""
import pytest
import torch

from conftest import needs_torchvision, torchvision
from fastmask.ops import paste_masks_in_image

if torchvision is not None:  # (the tests that use it are @needs_torchvision)
    from torchvision.models.detection.roi_heads import paste_masks_in_image as torchvision_paste


def assert_same(ours, ref):
    """float32/float64: torchvision's bits. Its paste resizes each mask with F.interpolate, whose
    CPU kernel (separable, or channels-last for boxes with height + width <= 128) and rounding
    (fused multiply-adds or not, by CPU capability) fastmask follows."""
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert torch.equal(ours, ref), f"{int((ours != ref).sum())} values differ, max {(ours - ref).abs().max()}"


def random_boxes(n, height, width, spread=1.4, max_size=0.6):
    """Boxes anywhere around the image, some partly outside it."""
    x1 = (torch.rand(n) * spread - (spread - 1) / 2) * width
    y1 = (torch.rand(n) * spread - (spread - 1) / 2) * height
    return torch.stack([x1, y1, x1 + torch.rand(n) * width * max_size, y1 + torch.rand(n) * height * max_size], 1)


def reference(masks, boxes, img_shape, padding=1):
    """torchvision's paste (roi_heads.paste_masks_in_image: expand_masks, expand_boxes, then
    paste_mask_in_image mask by mask, with its operations), transcribed so that it also runs where
    torchvision is not installed (a new torch), and giving empty masks for boxes wholly outside the
    image (where torchvision raises a shape error). test_reference_is_torchvisions checks it."""
    height, width = img_shape
    scale = (masks.shape[-1] + 2 * padding) / masks.shape[-1]
    out = masks.new_zeros((len(masks), 1, height, width))
    for o, m, b in zip(out, torch.nn.functional.pad(masks, (padding,) * 4), boxes):
        w_half, h_half = (b[2] - b[0]) * 0.5 * scale, (b[3] - b[1]) * 0.5 * scale
        xc, yc = (b[2] + b[0]) * 0.5, (b[3] + b[1]) * 0.5
        x0, y0, x1, y1 = (int(v.long()) for v in (xc - w_half, yc - h_half, xc + w_half, yc + h_half))
        top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1 + 1, height), min(x1 + 1, width)
        if top < bottom and left < right:
            size = (max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1))
            resized = torch.nn.functional.interpolate(m[None], size=size, mode="bilinear", align_corners=False)
            o[0, top:bottom, left:right] = resized[0, 0, top - y0:bottom - y0, left - x0:right - x0]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@needs_torchvision
def test_reference_is_torchvisions(seed, dtype):
    masks, boxes = torch.rand(30, 1, 28, 28, dtype=dtype), random_boxes(30, 90, 120, spread=1.0).to(dtype)
    boxes[:3] = torch.tensor([[5.0, 5, 5, 5], [0, 0, 119, 89], [30, 20, 10, 5]])  # 1 x 1, the image, inverted
    for padding in (0, 1, 2):
        assert_same(reference(masks, boxes, (90, 120), padding), torchvision_paste(masks, boxes, (90, 120), padding))


@pytest.mark.parametrize("n,img_shape", [(20, (97, 130)), (7, (1, 1)), (12, (40, 9)), (30, (150, 150))])
@pytest.mark.parametrize("padding", [0, 1, 2])
@needs_torchvision
def test_matches_torchvision(seed, n, img_shape, padding):
    masks = torch.rand(n, 1, 28, 28)
    boxes = random_boxes(n, *img_shape, spread=1.0)  # inside the image: torchvision's own paste works
    ours = paste_masks_in_image(masks, boxes, img_shape, padding)
    ref = torchvision_paste(masks, boxes, img_shape, padding)
    assert_same(ours, ref)


def test_boxes_partly_and_wholly_outside(seed):
    masks = torch.rand(60, 1, 14, 14)
    boxes = random_boxes(60, 50, 70, spread=3.0)
    boxes[:4] = torch.tensor([[-40.0, 10, -20, 30], [130, 10, 150, 30], [10, -40, 30, -20], [-9, -9, -3, -3]])
    ours = paste_masks_in_image(masks, boxes, (50, 70))
    assert_same(ours, reference(masks, boxes, (50, 70)))
    assert not ours[:4].any()


def test_tiny_huge_and_inverted_boxes(seed):
    masks = torch.rand(6, 1, 28, 28)
    boxes = torch.tensor([[10.0, 10, 10.2, 10.3], [5, 5, 5, 5], [-3000, -2000, 4000, 5000], [30, 20, 10, 5],
                          [0, 0, 1e4, 3], [12.5, 7.25, 13.75, 40.5]])
    ours = paste_masks_in_image(masks, boxes, (60, 80))
    assert_same(ours, reference(masks, boxes, (60, 80)))


@needs_torchvision
def test_non_finite_boxes_give_empty_masks(seed):
    masks = torch.rand(5, 1, 28, 28)
    boxes = torch.tensor([[1.0, 2, 30, 40], [float("nan"), 2, 30, 40], [1, 2, float("inf"), 40],
                          [-float("inf"), 2, 30, 40], [3.0, 4, 20, 25]])
    for dtype in (torch.float32, torch.float16):
        ours = paste_masks_in_image(masks.to(dtype), boxes.to(dtype), (50, 60))
        assert not ours[1:4].any()
        keep = [0, 4]
        ref = torchvision_paste(masks[keep].to(dtype), boxes[keep].to(dtype), (50, 60))
        torch.testing.assert_close(ours[keep], ref, rtol=0, atol=2e-3)


@needs_torchvision
def test_non_square_masks(seed):
    masks, boxes = torch.rand(5, 1, 20, 28), random_boxes(5, 60, 60, spread=1.0)
    assert_same(paste_masks_in_image(masks, boxes, (60, 60)), torchvision_paste(masks, boxes, (60, 60)))


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    """Runs the test on 1 and on 2 of torch's threads (the CPU kernel splits the output rows
    into chunks that threads take in turn), in deterministic mode, where new tensors are filled
    with NaN (bool: True): an output element that the kernel does not write shows."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    torch.use_deterministic_algorithms(True)
    try:
        yield request.param
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_mask_into_a_large_image(seed, threads, dtype):
    # One box over many chunks of rows (each thread takes some), reaching past the image's
    # left and bottom edges; a second image-wide box upsampled ~70x, and a small one (channels-last
    # kernel), so that chunks start and end inside boxes and change masks mid-chunk.
    masks = torch.rand(3, 1, 28, 28, dtype=dtype)
    boxes = torch.tensor([[-150.0, 40.3, 1200.7, 1700.0], [0, 0, 1999, 1499], [1500.2, 100.6, 1540.1, 130.9]],
                         dtype=dtype)
    ours = paste_masks_in_image(masks, boxes, (1500, 2000))
    assert_same(ours, reference(masks, boxes, (1500, 2000)))
    binary = paste_masks_in_image(masks, boxes, (1500, 2000), threshold=0.5)
    assert torch.equal(binary, ours > 0.5)


def test_many_masks_partly_outside(seed, threads):
    masks = torch.rand(40, 1, 28, 28)
    boxes = random_boxes(40, 300, 500, spread=1.6, max_size=0.9)
    ours = paste_masks_in_image(masks, boxes, (300, 500))
    assert_same(ours, reference(masks, boxes, (300, 500)))
    assert torch.equal(paste_masks_in_image(masks, boxes, (300, 500), threshold=0.5), ours > 0.5)


def test_one_pixel_boxes(seed, threads):
    # Degenerate boxes expand to a single pixel (a 1 x 1 resize of the padded mask), at the image's
    # corners and edges, just outside it, and in the middle of rows that other boxes share.
    masks = torch.rand(9, 1, 28, 28)
    boxes = torch.tensor([[0.0, 0, 0, 0], [69, 49, 69, 49], [69, 0, 69, 0], [0, 49, 0, 49], [30, 20, 30, 20],
                          [31.5, 20.25, 31.5, 20.25], [70, 10, 70, 10], [-1, 10, -1, 10], [10, 20, 60, 40]])
    ours = paste_masks_in_image(masks, boxes, (50, 70))
    assert_same(ours, reference(masks, boxes, (50, 70)))
    assert int((ours[:6] != 0).sum()) <= 6 and not ours[6:8].any()
    binary = paste_masks_in_image(masks, boxes, (50, 70), threshold=0.2)
    assert torch.equal(binary, ours > 0.2)


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_large_image(seed, threads, dtype, atol):
    masks = torch.rand(4, 1, 28, 28).to(dtype)
    boxes = torch.tensor([[-20.0, 30, 700, 500], [100, 100, 900, 160], [5, 5, 40, 50], [600, 0, 1023, 599]])
    ours = paste_masks_in_image(masks, boxes.to(dtype), (600, 1024))
    ref = reference(masks, boxes.to(dtype), (600, 1024))
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.double(), ref.double(), rtol=0, atol=atol)
    binary = paste_masks_in_image(masks, boxes.to(dtype), (600, 1024), threshold=0.5)
    assert torch.equal(binary, ours > 0.5)  # the same rounded values, compared


def test_no_masks():
    out = paste_masks_in_image(torch.rand(0, 1, 28, 28), torch.zeros(0, 4), (30, 40))
    assert out.shape == (0, 1, 30, 40) and out.dtype == torch.float32
    binary = paste_masks_in_image(torch.rand(0, 1, 28, 28), torch.zeros(0, 4), (30, 40), threshold=0.5)
    assert binary.shape == (0, 1, 30, 40) and binary.dtype == torch.bool


@needs_torchvision
def test_float64(seed):
    masks, boxes = torch.rand(8, 1, 28, 28).double(), random_boxes(8, 50, 60, spread=1.0).double()
    assert_same(paste_masks_in_image(masks, boxes, (50, 60)), torchvision_paste(masks, boxes, (50, 60)))


# PyTorch keeps the interpolation weights in fp16/bf16; fastmask computes in float32 and rounds once.
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@needs_torchvision
def test_half_precision(seed, dtype, atol):
    masks, boxes = torch.rand(8, 1, 28, 28).to(dtype), random_boxes(8, 50, 60, spread=1.0).to(dtype)
    ours = paste_masks_in_image(masks, boxes, (50, 60))
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.double(), torchvision_paste(masks, boxes, (50, 60)).double(), rtol=0, atol=atol)


@needs_torchvision
def test_threshold(seed):
    masks, boxes = torch.rand(15, 1, 28, 28), random_boxes(15, 80, 90, spread=1.0)
    binary = paste_masks_in_image(masks, boxes, (80, 90), threshold=0.5)
    ref = torchvision_paste(masks, boxes, (80, 90))
    assert binary.dtype == torch.bool and binary.shape == ref.shape
    assert torch.equal(binary, ref > 0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@needs_torchvision
def test_threshold_rounds_like_a_tensor_compare(dtype):
    # `pasted > 0.3` on an fp16/bf16 tensor compares with 0.3 rounded to that dtype.
    masks = torch.full((2, 1, 8, 8), 0.3, dtype=dtype)
    boxes = torch.tensor([[2.0, 2.0, 12.0, 12.0], [0.0, 0.0, 5.0, 7.0]])
    ref = torchvision_paste(masks, boxes, (16, 16)) > 0.3
    assert torch.equal(paste_masks_in_image(masks, boxes, (16, 16), threshold=0.3), ref)


@needs_torchvision
def test_strided_masks(seed):
    masks = torch.rand(6, 1, 56, 28)[:, :, ::2]
    boxes = random_boxes(6, 40, 50, spread=1.0)
    assert_same(paste_masks_in_image(masks, boxes, (40, 50)), torchvision_paste(masks, boxes, (40, 50)))


def test_opcheck_paste(seed):
    masks, boxes = torch.rand(4, 1, 8, 8), random_boxes(4, 20, 30, spread=1.2)
    torch.library.opcheck(torch.ops.fastmask.paste_masks_in_image.default, (masks, boxes, 20, 30, 1, None))
    torch.library.opcheck(torch.ops.fastmask.paste_masks_in_image.default, (masks, boxes, 20, 30, 0, 0.5))


def test_paste_bad_input():
    masks, boxes = torch.rand(3, 1, 28, 28), random_boxes(3, 20, 20)
    with pytest.raises(ValueError, match="3 masks but 2 boxes"):
        paste_masks_in_image(masks, boxes[:2], (20, 20))
    with pytest.raises(ValueError, match=r"\[N, 1, M, M\]"):
        paste_masks_in_image(masks[:, 0], boxes, (20, 20))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        paste_masks_in_image(masks, boxes[:, :3], (20, 20))
    with pytest.raises(ValueError, match="positive"):
        paste_masks_in_image(masks, boxes, (0, 20))
    with pytest.raises(TypeError, match="pair"):
        paste_masks_in_image(masks, boxes, 20)
    with pytest.raises(ValueError, match="padding"):
        paste_masks_in_image(masks, boxes, (20, 20), padding=-1)
    with pytest.raises(ValueError, match="padding"):  # the padded mask's size would overflow
        paste_masks_in_image(masks, boxes, (20, 20), padding=2**31)
    with pytest.raises(TypeError, match="float32"):
        paste_masks_in_image(masks.byte(), boxes, (20, 20))
    with pytest.raises(TypeError, match="floating"):
        paste_masks_in_image(masks, boxes.long(), (20, 20))
    with pytest.raises(TypeError, match="Tensor"):
        paste_masks_in_image(masks.tolist(), boxes, (20, 20))


@pytest.mark.cuda
def test_cuda_matches_cpu(seed):
    masks, boxes = torch.rand(40, 1, 28, 28), random_boxes(40, 300, 400, spread=2.0)
    for dtype, atol in ((torch.float32, 1e-6), (torch.float16, 1e-3), (torch.bfloat16, 8e-3)):
        m, b = masks.to(dtype), boxes
        torch.testing.assert_close(paste_masks_in_image(m.cuda(), b.cuda(), (300, 400)).cpu().float(),
                                   paste_masks_in_image(m, b, (300, 400)).float(), rtol=0, atol=atol)
    cuda_binary = paste_masks_in_image(masks.cuda(), boxes.cuda(), (300, 400), threshold=0.5).cpu()
    cpu = paste_masks_in_image(masks, boxes, (300, 400))
    decided = (cpu - 0.5).abs() > 1e-6
    assert torch.equal(cuda_binary[decided], (cpu > 0.5)[decided])
    assert paste_masks_in_image(masks[:0].cuda(), boxes[:0].cuda(), (30, 40)).shape == (0, 1, 30, 40)


def test_torch_compile_fullgraph(seed):
    masks, boxes = torch.rand(5, 1, 28, 28), random_boxes(5, 50, 60)
    paste = torch.compile(lambda m, b: paste_masks_in_image(m, b, (50, 60), threshold=0.5), fullgraph=True)
    assert torch.equal(paste(masks, boxes), paste_masks_in_image(masks, boxes, (50, 60), threshold=0.5))


@pytest.mark.cuda
def test_cuda_paste_beyond_the_block_limit(seed):
    # 3,000 masks x 400 image rows: 1.2 M rows, more than the 2^20 blocks launched, so blocks walk
    # rows in a grid-stride loop. New outputs are NaN-filled (bool: True) first (deterministic
    # mode), so an unwritten row shows.
    masks, boxes = torch.rand(3000, 1, 28, 28), random_boxes(3000, 400, 64)
    torch.use_deterministic_algorithms(True)
    try:
        pasted = paste_masks_in_image(masks.cuda(), boxes.cuda(), (400, 64))
        binary = paste_masks_in_image(masks.cuda(), boxes.cuda(), (400, 64), threshold=0.5)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(pasted.cpu(), paste_masks_in_image(masks, boxes, (400, 64)), rtol=0, atol=1e-6)
    assert torch.equal(binary.cpu(), paste_masks_in_image(masks, boxes, (400, 64), threshold=0.5))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_thresholds_in_half_precision_equal_cpu(seed, dtype):
    # Both devices sample with the same fused multiply-adds in float, round the value and the
    # threshold to the dtype and compare: the same bits, so the same mask, also at values tied
    # with the rounded threshold (constant masks: 0.3 is not an fp16/bf16 value).
    masks = torch.cat([torch.rand(30, 1, 28, 28), torch.full((6, 1, 28, 28), 0.3)]).to(dtype)
    boxes = random_boxes(36, 120, 150, spread=1.6)
    for threshold in (0.5, 0.3, 0.7):
        ours = paste_masks_in_image(masks.cuda(), boxes.cuda(), (120, 150), threshold=threshold)
        assert torch.equal(ours.cpu(), paste_masks_in_image(masks, boxes, (120, 150), threshold=threshold))


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_paste_on_the_second_gpu(seed):
    # The current device stays cuda:0: the op must run on its inputs' device (device guard).
    device = torch.device("cuda", 1)
    masks, boxes = torch.rand(10, 1, 28, 28), random_boxes(10, 60, 70)
    ours = paste_masks_in_image(masks.to(device), boxes.to(device), (60, 70))
    assert ours.device == device
    torch.testing.assert_close(ours.cpu(), paste_masks_in_image(masks, boxes, (60, 70)), rtol=0, atol=1e-6)
    binary = paste_masks_in_image(masks.to(device), boxes.to(device), (60, 70), threshold=0.5)
    assert binary.device == device
    assert torch.equal(binary.cpu(), paste_masks_in_image(masks, boxes, (60, 70), threshold=0.5))

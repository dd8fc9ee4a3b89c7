"""NMS against torchvision (bit for bit) and a pure-PyTorch reference, edge cases, bad input."""
import math

import numpy as np
import pytest
import torch

from conftest import needs_torchvision, torchvision
from fastmask.ops import batched_nms, multi_image_nms, nms
from nms_cases import random_case, tile_chain_boxes


def random_boxes(n, size=200.0, max_wh=60.0, dtype=torch.float32, ties=False):
    xy = torch.rand(n, 2) * size
    wh = torch.rand(n, 2) * max_wh
    boxes = torch.cat([xy, xy + wh], 1)
    if ties:  # a quarter of the boxes duplicated, scores on a coarse grid
        dup = torch.randint(0, n, (n // 4,))
        boxes[torch.randint(0, n, (n // 4,))] = boxes[dup]
        scores = torch.randint(0, 8, (n,)).float() / 8
    else:
        scores = torch.rand(n)
    return boxes.to(dtype), scores.to(dtype)


def reference_nms(boxes, scores, threshold, idxs=None):
    """Greedy NMS with torch ops in the boxes' dtype (torchvision's expression)."""
    order = scores.sort(descending=True, stable=True)[1]
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        ovr = inter / (area[i] + area - inter)
        hit = ovr.double() > threshold
        if idxs is not None:
            hit &= idxs == idxs[i]
        suppressed |= hit
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 300, 3000])
@pytest.mark.parametrize("ties", [False, True])
@needs_torchvision
def test_nms_matches_torchvision(seed, dtype, n, ties):
    boxes, scores = random_boxes(n, dtype=dtype, ties=ties)
    for threshold in (0.0, 0.3, 0.5, 0.7, 1.0):
        assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold)), threshold


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_half_types_match_reference(seed, dtype):
    # torchvision has no fp16/bf16 CPU NMS: the reference does the same arithmetic with torch ops.
    boxes, scores = random_boxes(400, size=100.0, max_wh=40.0, dtype=dtype, ties=True)
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(nms(boxes, scores, threshold), reference_nms(boxes, scores, threshold))


@needs_torchvision
def test_thresholds_beyond_float_range(seed):
    boxes, scores = random_boxes(100)
    for threshold in (1e300, -1e300, math.inf, -math.inf, 3.5e38, -3.5e38):
        assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold)), threshold


@needs_torchvision
def test_iou_exactly_at_threshold():
    boxes = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 1]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    for threshold in (0.5, 0.5 - 1e-12, 0.49999997, 0.5000001):
        ours, theirs = nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold)
        assert torch.equal(ours, theirs), threshold
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]  # not suppressed: IoU must exceed the threshold
    assert nms(boxes, scores, 0.4999).tolist() == [0]


@needs_torchvision
def test_degenerate_and_duplicate_boxes():
    boxes = torch.tensor(
        [[0.0, 0, 0, 0], [1, 1, 1, 5], [2, 2, 4, 4], [2, 2, 4, 4], [4, 4, 2, 2], [-5, -5, 5, 5], [2, 2, 4, 4]]
    )
    scores = torch.tensor([0.5, 0.5, 0.9, 0.9, 0.7, 0.1, 0.9])
    for threshold in (0.0, 0.5, 1.0):
        assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


@needs_torchvision
def test_nan_rule_matches_torchvision():
    boxes, scores = random_boxes(50)
    scores[[3, 17]] = math.nan
    boxes[[5, 9], 0] = math.nan
    for threshold in (0.3, 0.7):
        ours = nms(boxes, scores, threshold)
        assert torch.equal(ours, torchvision.ops.nms(boxes, scores, threshold))
        assert ours[:2].tolist() == [3, 17]  # NaN scores first
        assert 5 in ours.tolist() and 9 in ours.tolist()  # NaN boxes neither suppress nor are suppressed


def test_empty_inputs():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).shape == (0,)
    keep, counts = multi_image_nms(torch.zeros(2, 0, 4), torch.zeros(2, 0), 0.5)
    assert keep.shape == (2, 0) and counts.tolist() == [0, 0]
    keep, counts = multi_image_nms(torch.zeros(0, 5, 4), torch.zeros(0, 5), 0.5)
    assert keep.shape == (0, 5) and counts.shape == (0,)


def assert_same_kept(ours, theirs, scores):
    """Same kept boxes in the same score order; among tied scores any order (torchvision's
    per-class path sorts its result with an unstable sort)."""
    assert torch.equal(ours.sort()[0], theirs.sort()[0])
    assert torch.equal(scores[ours], scores[theirs])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,classes", [(500, 3), (1000, 80), (3000, 80)])
@needs_torchvision
def test_batched_nms_matches_torchvision(seed, dtype, n, classes):
    # Up to 4000 coordinates (1000 boxes) torchvision's CPU batched_nms runs one NMS on
    # class-offset boxes: on a 1/8 grid the offset coordinates are exact, so its result is exact
    # and must be equal. Above, it loops over classes and orders the result with an unstable sort.
    boxes, scores = random_boxes(n, size=400.0, dtype=dtype)
    boxes = (boxes * 8).round() / 8
    idxs = torch.randint(0, classes, (n,))
    for threshold in (0.5, 0.7):
        ours = batched_nms(boxes, scores, idxs, threshold)
        theirs = torchvision.ops.batched_nms(boxes, scores, idxs, threshold)
        if boxes.numel() <= 4000:
            assert torch.equal(ours, theirs)
        else:
            assert_same_kept(ours, theirs, scores)
            assert torch.equal(ours, reference_nms(boxes, scores, threshold, idxs))


def test_batched_nms_is_exact_where_the_offset_trick_rounds(seed):
    # Off the grid, torchvision's offset coordinates round in float32 and its IoUs drift;
    # fastmask computes every IoU on the original coordinates, like per-class NMS.
    boxes, scores = random_boxes(1500, size=400.0)
    idxs = torch.randint(0, 80, (1500,))
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), reference_nms(boxes, scores, 0.5, idxs))


def test_batched_nms_keeps_classes_apart_at_large_coordinates():
    # In float16 the offset trick (coordinates + class * (max + 1)) rounds; classes must never merge.
    boxes = torch.tensor([[1000.0, 1000, 1010, 1010]] * 4, dtype=torch.float16)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float16)
    idxs = torch.tensor([0, 1, 2, 1])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1, 2]
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), reference_nms(boxes, scores, 0.5, idxs))


@pytest.mark.parametrize("with_idxs", [False, True])
@needs_torchvision
def test_multi_image_equals_torchvision_per_image(seed, with_idxs):
    B, N = 4, 700  # up to 1000 boxes torchvision's batched_nms offsets coordinates: keep them exact
    boxes = (torch.stack([random_boxes(N)[0] for _ in range(B)]) * 8).round() / 8
    scores = torch.rand(B, N)
    idxs = torch.randint(0, 5, (B, N)) if with_idxs else None
    keep, counts = multi_image_nms(boxes, scores, 0.6, idxs=idxs)
    assert keep.shape == (B, N)
    for b in range(B):
        ref = (
            torchvision.ops.batched_nms(boxes[b], scores[b], idxs[b], 0.6)
            if with_idxs
            else torchvision.ops.nms(boxes[b], scores[b], 0.6)
        )
        assert counts[b] == len(ref)
        assert torch.equal(keep[b, : counts[b]], ref)
        assert (keep[b, counts[b]:] == -1).all()


@needs_torchvision
def test_multi_image_valid_mask_and_max_output(seed):
    B, N = 3, 200
    boxes = torch.stack([random_boxes(N)[0] for _ in range(B)])
    scores = torch.rand(B, N)
    valid = torch.rand(B, N) > 0.3
    keep, counts = multi_image_nms(boxes, scores, 0.5, valid=valid, max_output=25)
    assert keep.shape == (B, 25)
    for b in range(B):
        index = valid[b].nonzero().squeeze(1)
        ref = index[torchvision.ops.nms(boxes[b][index], scores[b][index], 0.5)][:25]
        assert counts[b] == len(ref)
        assert torch.equal(keep[b, : counts[b]], ref)


def test_opcheck(seed):
    boxes, scores = random_boxes(60)
    idxs = torch.randint(0, 3, (60,))
    torch.library.opcheck(torch.ops.fastmask.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(torch.ops.fastmask.batched_nms.default, (boxes, scores, idxs, 0.5))
    torch.library.opcheck(
        torch.ops.fastmask.multi_image_nms.default,
        (boxes.expand(2, 60, 4), scores.expand(2, 60), idxs.expand(2, 60), None, 0.5, 30),
    )


def test_compile_fullgraph(seed):
    boxes = torch.stack([random_boxes(80)[0] for _ in range(2)])
    scores = torch.rand(2, 80)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def post_process(boxes, scores):
        keep, counts = multi_image_nms(boxes, scores, 0.5, max_output=40)
        return keep, counts * 1

    keep, counts = post_process(boxes, scores)
    ref_keep, ref_counts = multi_image_nms(boxes, scores, 0.5, max_output=40)
    assert torch.equal(keep, ref_keep) and torch.equal(counts, ref_counts)

    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    try:
        single = torch.compile(lambda b, s: nms(b, s, 0.5) + 0, fullgraph=True, backend="aot_eager")
        assert torch.equal(single(boxes[0], scores[0]), nms(boxes[0], scores[0], 0.5))
    finally:
        torch._dynamo.config.capture_dynamic_output_shape_ops = False


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda b, s: nms(b[:, :3], s, 0.5), ValueError, r"boxes must be a \[N, 4\]"),
        (lambda b, s: nms(b, s[:-1], 0.5), ValueError, r"scores must be a \[N\] tensor"),
        (lambda b, s: nms(b.long(), s, 0.5), TypeError, "boxes must be float32"),
        (lambda b, s: nms("boxes", s, 0.5), TypeError, "boxes must be a Tensor"),
        (lambda b, s: batched_nms(b, s, torch.zeros(10), 0.5), TypeError, "idxs must be an integer tensor"),
        (lambda b, s: batched_nms(b, s, torch.zeros(3, dtype=torch.int64), 0.5), ValueError, "idxs must be a"),
        (lambda b, s: multi_image_nms(b, s, 0.5), ValueError, r"boxes must be a \[B, N, 4\]"),
        (lambda b, s: multi_image_nms(b[None], s, 0.5), ValueError, r"scores must have shape \[B, N\]"),
        (lambda b, s: multi_image_nms(b[None], s[None], 0.5, valid=torch.ones(1, 10)), TypeError, "valid must be a bool"),
        (lambda b, s: multi_image_nms(b[None], s[None], 0.5, valid=torch.ones(1, 9, dtype=torch.bool)), ValueError, "valid must have shape"),
        (lambda b, s: nms(b, s.long(), 0.5), TypeError, "fastmask.nms: scores must be floating point"),
        (lambda b, s: multi_image_nms(b[None], s[None], 0.5, max_output=-1), ValueError, "max_output must be >= 0"),
    ],
)
def test_bad_input_raises_clear_errors(call, exc, match):
    boxes, scores = random_boxes(10)
    with pytest.raises(exc, match=match):
        call(boxes, scores)


# ----------------------------------------------------------------------------- threshold
# The kernels compare the IoU in its own type with threshold_in (csrc/nms/nms_threshold.h), which
# must decide every IoU as torchvision's double comparison does: exhaustively checked for fp16/bf16
# (and densely for float32/float64) by cpp_test/test_nms_threshold.cpp (ctest); here, through the op.


def iou_pairs(count, dtype, device="cpu"):
    """[count, 2, 4] pairs of overlapping boxes, one pair per image, and the IoU of each pair as
    the kernels compute it (torchvision's expression in dtype, every result rounded to it)."""
    a = torch.rand(count, 2) * 50
    b = a + torch.randn(count, 2) * 3
    wh_a, wh_b = torch.rand(count, 2) * 20 + 1, torch.rand(count, 2) * 20 + 1
    boxes = torch.stack([torch.cat([a, a + wh_a], 1), torch.cat([b, b + wh_b], 1)], 1).to(dtype)
    x1, y1, x2, y2 = boxes.unbind(2)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, 0], x2[:, 1]) - torch.maximum(x1[:, 0], x1[:, 1])).clamp(min=0)
    h = (torch.minimum(y2[:, 0], y2[:, 1]) - torch.maximum(y1[:, 0], y1[:, 1])).clamp(min=0)
    inter = w * h
    ovr = inter / (area[:, 0] + area[:, 1] - inter)
    return boxes.to(device), ovr.double()


def check_threshold_decisions(dtype, device):
    # Through the op: for thresholds at, just around and between IoU values that occur, the second
    # box of a pair is suppressed exactly when double(IoU) > threshold.
    boxes, ovr = iou_pairs(500, dtype, device)
    scores = torch.tensor([0.9, 0.8], dtype=dtype, device=device).expand(len(boxes), 2)
    picked = ovr[ovr > 0][:25].numpy()
    neighbours = [np.float32] + ([np.float16] if dtype == torch.float16 else [])
    thresholds = [picked, np.nextafter(picked, np.inf), np.nextafter(picked, -np.inf)]
    if dtype != torch.float64:
        for t in neighbours:
            v = picked.astype(t)
            thresholds += [(v.astype(np.float64) + np.nextafter(v, t(np.inf))) / 2,
                           (v.astype(np.float64) + np.nextafter(v, t(-np.inf))) / 2]
    for threshold in np.concatenate(thresholds).tolist():
        keep, counts = multi_image_nms(boxes, scores, threshold)
        expected = torch.where(ovr > threshold, 1, 2)
        assert torch.equal(counts.cpu(), expected), threshold


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_threshold_decisions_through_the_op(seed, dtype):
    check_threshold_decisions(dtype, "cpu")


# ----------------------------------------------------------------------------- CUDA
# The CUDA kernels' index logic is also emulated and tested without a GPU in
# test_nms_cuda_emulation.py.


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_equals_cpu(seed, dtype):
    boxes, scores = random_boxes(2000, dtype=dtype, ties=True)
    idxs = torch.randint(0, 7, (2000,))
    for threshold in (0.0, 0.5, 0.7, 1.0):
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), threshold).cpu(), nms(boxes, scores, threshold))
        assert torch.equal(
            batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), threshold).cpu(),
            batched_nms(boxes, scores, idxs, threshold),
        )


def assert_cuda_equals_cpu(boxes, scores, threshold, idxs=None, valid=None, max_output=None):
    expected = multi_image_nms(boxes, scores, threshold, idxs=idxs, valid=valid, max_output=max_output)
    cuda = [t.cuda() if t is not None else None for t in (boxes, scores, idxs, valid)]
    keep, counts = multi_image_nms(cuda[0], cuda[1], threshold, idxs=cuda[2], valid=cuda[3], max_output=max_output)
    assert torch.equal(counts.cpu(), expected[1])
    assert torch.equal(keep.cpu(), expected[0])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N", [1, 63, 64, 65, 128, 129])
def test_cuda_multi_image_equals_cpu(seed, dtype, N):
    boxes, scores, idxs, valid = random_case(3, N, dtype, classes=3, valid_fraction=0.8, ties=True, nan=True)
    for threshold in (0.5, 0.0, -0.25, 1.0):
        for max_output in (N, max(1, N // 3)):
            assert_cuda_equals_cpu(boxes, scores, threshold, idxs=idxs, valid=valid, max_output=max_output)
    boxes, scores, idxs, _ = random_case(3, N, dtype, classes=2 * N, grid=True)  # exact IoUs, ~singleton classes
    assert_cuda_equals_cpu(boxes, scores, 0.5, idxs=idxs)
    assert_cuda_equals_cpu(boxes, scores, 0.5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_large_groups_equal_cpu(seed, dtype):
    # Groups of several tiles (256 candidates each), settled in a chain across blocks.
    boxes, scores, idxs, valid = random_case(2, 3000, dtype, classes=2, valid_fraction=0.9)
    for threshold in (0.3, 0.7):
        assert_cuda_equals_cpu(boxes, scores, threshold, idxs=idxs, valid=valid)
        assert_cuda_equals_cpu(boxes, scores, threshold, max_output=300)
    boxes, scores, _, _ = random_case(1, 5000, dtype, grid=True)  # dense: almost all suppressed
    assert_cuda_equals_cpu(boxes, scores, 0.4)
    if dtype == torch.float32:  # sparse: almost all kept, a chain of ~80 tiles (the CPU's fp16 is slow here)
        boxes, scores = random_boxes(20000, size=4000.0, max_wh=20.0)
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), nms(boxes, scores, 0.5))


@pytest.mark.cuda
def test_cuda_single_class_100k_boxes_equal_cpu(seed):
    # One group of ~400 tiles: every tile finds its group's first tile (first_tiles, computed once
    # by the binding) and settles after the ~400-link chain before it.
    boxes, scores = random_boxes(100_000, size=20000.0, max_wh=40.0)
    for threshold in (0.3, 0.7):
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), threshold).cpu(), nms(boxes, scores, threshold))


@pytest.mark.cuda
def test_cuda_graph_replay_of_multi_image_nms_equals_eager(seed):
    # No host synchronisation anywhere: the call captures in a CUDA graph, and replays on new
    # inputs copied into the captured ones give eager's results.
    cases = [random_case(4, 600, torch.float32, classes=5, valid_fraction=0.8) for _ in range(3)]
    static = [t.cuda() for t in cases[0]]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        multi_image_nms(static[0], static[1], 0.5, idxs=static[2], valid=static[3], max_output=100)  # warm-up
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        keep, counts = multi_image_nms(static[0], static[1], 0.5, idxs=static[2], valid=static[3], max_output=100)
    for case in cases[1:] + cases[:1]:
        for target, value in zip(static, case):
            target.copy_(value)
        graph.replay()
        expected = multi_image_nms(*(t.cuda() for t in case[:2]), 0.5, idxs=case[2].cuda(), valid=case[3].cuda(),
                                   max_output=100)
        assert torch.equal(keep, expected[0]) and torch.equal(counts, expected[1])


@pytest.mark.cuda
def test_cuda_truncation_at_tile_boundaries():
    # A group's earlier tiles (256 candidates each) keep max_output - 1, max_output or
    # max_output + 1 boxes: a later tile starts with room 1 (and must still drop its first
    # candidate, suppressed only through the look-back), 0 or none.
    boxes, scores = tile_chain_boxes(800, 256)
    for max_output in (255, 256, 257, 510, 511, 512, 765, 766, 767, 800):
        assert_cuda_equals_cpu(boxes, scores, 0.5, max_output=max_output)


@pytest.mark.cuda
def test_cuda_many_images(seed):
    boxes, scores, idxs, valid = random_case(70_000, 3, torch.float32, classes=2, valid_fraction=0.8, grid=True)
    assert_cuda_equals_cpu(boxes, scores, 0.3, idxs=idxs, valid=valid)
    assert_cuda_equals_cpu(boxes, scores, 0.3, idxs=idxs, valid=valid, max_output=1)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_threshold_decisions_through_the_op(seed, dtype):
    check_threshold_decisions(dtype, "cuda")


@pytest.mark.cuda
def test_cuda_multi_image_without_host_sync(seed):
    B, N = 8, 1000
    boxes = torch.stack([random_boxes(N)[0] for _ in range(B)])
    scores, idxs, valid = torch.rand(B, N), torch.randint(0, 5, (B, N)), torch.rand(B, N) > 0.1
    expected = multi_image_nms(boxes, scores, 0.7, idxs=idxs, valid=valid, max_output=300)
    args = [t.cuda() for t in (boxes, scores, idxs, valid)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        keep, counts = multi_image_nms(args[0], args[1], 0.7, idxs=args[2], valid=args[3], max_output=300)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(keep.cpu(), expected[0]) and torch.equal(counts.cpu(), expected[1])


def detection_candidates(B, proposals, classes, valid_fraction):
    """RoIHeads.detect's NMS input: every (proposal, class) pair of each image, proposal-major,
    the class boxes scattered around their proposal; few pass the score threshold."""
    xy = torch.rand(B, proposals, 1, 2) * 700
    wh = torch.rand(B, proposals, 1, 2) * 200 + 8
    jitter = torch.randn(B, proposals, classes, 4) * 6
    boxes = (torch.cat([xy, xy + wh], 3) + jitter).reshape(B, proposals * classes, 4)
    scores = torch.rand(B, proposals * classes)
    labels = torch.arange(1, classes + 1).repeat(B, proposals)
    valid = torch.rand(B, proposals * classes) < valid_fraction
    return boxes, scores, labels, valid


@pytest.mark.cuda
@pytest.mark.parametrize("B,proposals,valid_fraction", [(2, 56, 1.0), (8, 1000, 0.05)])
def test_cuda_multi_image_sync_free_and_graph_capturable(seed, B, proposals, valid_fraction):
    # multi_image_nms at B = 2, N ~ 5,000 and at the detection head's size (B = 8, N = 90,000,
    # 5% valid), 90 classes: no host sync (eager under sync debug mode "error", and inside a CUDA
    # graph capture), and the replayed graph equals eager and the CPU, also after new inputs.
    classes, max_output = 90, 100
    boxes, scores, labels, valid = (t.cuda() for t in detection_candidates(B, proposals, classes, valid_fraction))

    def run():
        return multi_image_nms(boxes, scores, 0.5, idxs=labels, valid=valid, max_output=max_output)

    def run_sync_free():
        torch.cuda.set_sync_debug_mode("error")
        try:
            return run()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    torch.cuda.synchronize()
    eager = run_sync_free()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up outside the capture, as torch.cuda.graphs recommends
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # (entering it synchronises, hence the debug mode inside)
        captured = run_sync_free()
    expected = multi_image_nms(boxes.cpu(), scores.cpu(), 0.5, idxs=labels.cpu(), valid=valid.cpu(),
                               max_output=max_output)
    assert torch.equal(eager[0].cpu(), expected[0]) and torch.equal(eager[1].cpu(), expected[1])
    for _ in range(2):  # every replay starts from zeroed scratch
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured[0], eager[0]) and torch.equal(captured[1], eager[1])
    new_boxes, new_scores, _, new_valid = detection_candidates(B, proposals, classes, valid_fraction)
    boxes.copy_(new_boxes), scores.copy_(new_scores), valid.copy_(new_valid)
    graph.replay()
    torch.cuda.synchronize()
    fresh = run()
    assert torch.equal(captured[0], fresh[0]) and torch.equal(captured[1], fresh[1])

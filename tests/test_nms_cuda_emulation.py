"""The CUDA NMS's index logic, emulated step for step (tests/nms_cuda_emulation.py), against the
CPU kernel (which equals torchvision): grouping, tiles and their look-back, word boundaries,
bit handling, compaction, the ordered write with max_output. Runs without a GPU."""
import math

import pytest
import torch

import nms_cuda_emulation as emu
from nms_cases import random_case, tile_chain_boxes
from fastmask.ops import multi_image_nms

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def check(boxes, scores, threshold, idxs=None, valid=None, max_output=None, **emulation):
    expected = multi_image_nms(boxes, scores, threshold, idxs=idxs, valid=valid, max_output=max_output)
    got = emu.multi_image_nms(boxes, scores, threshold, idxs=idxs, valid=valid, max_output=max_output, **emulation)
    assert torch.equal(got[1], expected[1]), (got[1], expected[1])
    assert torch.equal(got[0], expected[0])
    return expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", [1, 63, 64, 65, 128, 129])
def test_emulation_equals_cpu(seed, dtype, N):
    B = 3
    boxes, scores, idxs, valid = random_case(B, N, dtype, classes=3, valid_fraction=0.8, ties=True, nan=True)
    for threshold in (0.5, 0.0):
        check(boxes, scores, threshold, idxs=idxs, valid=valid, max_output=max(1, N // 3), num_blocks=3, seed=seed)
    # One class, no validity mask: several words in a tile, or several tiles in the group.
    boxes, scores, _, _ = random_case(B, N, dtype, grid=True)
    for tile in (256, 96, 32):
        check(boxes, scores, 0.5, tile=tile, num_blocks=5, seed=seed)
    boxes, scores, _, _ = random_case(B, N, dtype)
    check(boxes, scores, 0.3, num_blocks=2, seed=seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulation_thresholds(seed, dtype):
    # Integer boxes: IoUs exactly at 0.5, 1/3, ...; a negative threshold (IoU 0 exceeds it: no
    # shortcut for disjoint boxes), beyond-range and NaN thresholds.
    boxes, scores, idxs, valid = random_case(2, 70, dtype, classes=2, grid=True, ties=True)
    for threshold in (0.5, 1 / 3, 0.25, 1.0, -0.25, -math.inf, math.inf, 1e300, math.nan):
        check(boxes, scores, threshold, idxs=idxs, valid=valid, num_blocks=2, seed=seed)


def test_emulation_many_classes_and_truncation(seed):
    boxes, scores, idxs, valid = random_case(3, 129, torch.float32, classes=40, valid_fraction=0.5, grid=True)
    for max_output in (1, 2, 7, 129):
        check(boxes, scores, 0.3, idxs=idxs, valid=valid, max_output=max_output, num_blocks=6, seed=seed)
    # A single class truncated inside a later tile of its group, and inside a word.
    boxes, scores, _, _ = random_case(2, 200, torch.float32)
    for max_output in (1, 63, 64, 65, 100, 150):
        check(boxes, scores, 0.2, max_output=max_output, tile=64, num_blocks=4, seed=seed)


def test_emulation_truncation_at_tile_boundaries(seed):
    # The group's earlier tiles keep max_output - 1, max_output or max_output + 1 boxes, so a
    # later tile starts with room 1 (and must still drop its first candidate), 0 or none.
    tile, N = 16, 70
    boxes, scores = tile_chain_boxes(N, tile)
    kept_before = [tile + (tile - 1) * k for k in range(4)]  # by the tiles before tiles 1, 2, 3, 4
    for max_output in sorted({m + d for m in kept_before for d in (-1, 0, 1)} | {N}):
        check(boxes, scores, 0.5, max_output=max_output, tile=tile, num_blocks=3, seed=seed)

def test_emulation_look_back_across_tiles(seed):
    # Large groups at the kernel's real tile size: chains of tiles interleaved over several blocks.
    boxes, scores, idxs, valid = random_case(2, 600, torch.float32, classes=2, valid_fraction=0.9)
    for num_blocks in (1, 3, 8):
        check(boxes, scores, 0.5, idxs=idxs, valid=valid, num_blocks=num_blocks, seed=seed + num_blocks)
    boxes, scores, _, _ = random_case(1, 700, torch.float32, grid=True)  # dense: most suppressed
    check(boxes, scores, 0.4, num_blocks=4, seed=seed)


def test_emulation_valid_first_grouping():
    # The invalid candidates must not interleave with a valid class that sorts last (int64 max).
    big = torch.iinfo(torch.int64).max
    order = torch.arange(6).unsqueeze(0)
    classes = torch.tensor([[big, 3, big, 3, big, big]])
    valid = torch.tensor([[False, True, True, False, True, False]])
    ranks, num_valid, tiles, num_tiles, first_tiles = emu.group_candidates(order, classes, valid, tile=256)
    assert ranks[0, :3].tolist() == [1, 2, 4] and num_valid.tolist() == [3]
    assert int(num_tiles) == 2 and tiles[:2].tolist() == [2 * 0 + 1, 2 * 1 + 1]
    assert first_tiles[:2].tolist() == [0, 1]
    ranks, _, tiles, num_tiles, first_tiles = emu.group_candidates(order, classes, valid, tile=1)
    assert int(num_tiles) == 3 and tiles[:3].tolist() == [1, 3, 2 * 2]  # a second tile of class big
    assert first_tiles[:3].tolist() == [0, 1, 1]  # ... whose group starts at tile 1


def test_emulation_long_tile_chains():
    # One class of many tiles per image (as a single-class nms of 10^5 boxes, scaled down by small
    # tiles): each tile finds its group's first tile from first_tiles (computed once by the
    # binding), which the emulation checks against a walk back over the tiles.
    boxes, scores, _, _ = random_case(3, 200, torch.float32)
    ranks, num_valid, tiles, num_tiles, first_tiles = emu.group_candidates(
        scores.sort(stable=True, dim=1, descending=True)[1], None, None, tile=4)
    assert int(num_tiles) == 150 and first_tiles[:150].tolist() == [50 * (t // 50) for t in range(150)]
    for num_blocks in (1, 5):
        check(boxes, scores, 0.5, tile=4, num_blocks=num_blocks, seed=num_blocks)


def test_emulation_empty_and_degenerate():
    check(torch.zeros(2, 0, 4), torch.zeros(2, 0), 0.5)
    boxes, scores, idxs, _ = random_case(3, 5, torch.float32, classes=2)
    check(boxes, scores, 0.5, idxs=idxs, valid=torch.zeros(3, 5, dtype=torch.bool))
    check(boxes, scores, 0.5, idxs=idxs, max_output=0)

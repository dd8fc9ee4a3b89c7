"""A step-for-step Python emulation of fastmask's CUDA multi-image NMS (csrc/nms/nms.cpp's sort,
nms_cuda_ops.cpp's grouping, nms_cuda.cu's kernels), so its index logic is tested where no GPU is.

What is emulated as the device does it: the binding's ATen ops (the same torch calls); the
persistent blocks of ``greedy_kernel`` as coroutines run in a random interleaving (tickets,
waits on earlier tiles of the group, publication of kept ranks); inside a block, its 256 threads
as vectors: the tile load, the sweep of staged kept boxes over the alive candidates with the
block-wide exclusive scan that compacts the survivors, the 64x64 overlap bits with the
4-threads-per-row layout and its shuffle-xor reduction, the serial settle of a word by thread 0,
the staging of the word's kept boxes; and ``write_kept_kernel``'s word popcounts, scan and
truncation to max_output. The IoU is computed with torch ops in the box dtype (which round every
result to it, as DeviceArith::round does), compared with the threshold converted as
nms_threshold.h does. Keep it in step with the CUDA code.
"""
import math
import random

import numpy as np
import torch

WORD = 64
THREADS = 256  # kNmsTile: candidates per tile and threads per block
ROW_THREADS = THREADS // WORD
ROW_COLUMNS = WORD // ROW_THREADS


def threshold_in(threshold, np_dtype):
    """nms_threshold.h: the largest np_dtype value not above the (double) threshold."""
    info = np.finfo(np_dtype)
    if math.isnan(threshold):
        return np_dtype(math.nan)
    if threshold == math.inf:
        return np_dtype(math.inf)
    if threshold >= float(info.max):
        return np_dtype(info.max)
    if threshold < -float(info.max):
        return np_dtype(-math.inf)
    t = np_dtype(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np_dtype(-math.inf))
    return t


def compare_dtype(dtype):
    """DeviceArith<T>::V: the type the IoU is compared in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def load_box(boxes):
    """[K, 4] boxes in their dtype -> [K, 5] (x1, y1, x2, y2, area), area in the dtype."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return torch.cat([boxes, area[:, None]], 1)


def suppresses(a, b, threshold, zero_exceeds):
    """[K, J]: kept box a[k] suppresses candidate b[j] (the kernel's `suppresses`)."""
    ax1, ay1, ax2, ay2, aarea = (v[:, None] for v in a.unbind(1))
    bx1, by1, bx2, by2, barea = (v[None, :] for v in b.unbind(1))
    xx1 = torch.where(ax1 < bx1, bx1, ax1)
    yy1 = torch.where(ay1 < by1, by1, ay1)
    xx2 = torch.where(bx2 < ax2, bx2, ax2)
    yy2 = torch.where(by2 < ay2, by2, ay2)
    dw, dh = xx2 - xx1, yy2 - yy1
    zero = torch.zeros((), dtype=a.dtype)
    w = torch.where(zero < dw, dw, zero)
    h = torch.where(zero < dh, dh, zero)
    inter = w * h
    ovr = inter / ((aarea + barea) - inter)
    exceeds = ovr.to(threshold.dtype) > threshold
    return exceeds & ((inter > zero) | zero_exceeds)


def group_candidates(order, classes, valid, tile):
    """nms_cuda_ops.cpp's group_candidates, op for op (on the CPU)."""
    B, N = order.shape
    ranks = cls = None
    if classes is not None:
        cls, ranks = classes.sort(stable=True, dim=1, descending=False)
    if valid is not None:
        v = valid.gather(1, ranks) if ranks is not None else valid
        valid_first = v.logical_not().to(torch.uint8).sort(stable=True, dim=1, descending=False)[1]
        ranks = ranks.gather(1, valid_first) if ranks is not None else valid_first
        if cls is not None:
            cls = cls.gather(1, valid_first)
        num_valid = valid.sum(1)
    else:
        num_valid = torch.full((B,), N, dtype=torch.int64)
    ranks = ranks.to(torch.int32) if ranks is not None else torch.arange(N, dtype=torch.int32).repeat(B, 1)
    slot = torch.arange(N)
    group_start = slot.eq(0).expand(B, N)
    if cls is not None:
        group_start = group_start | cls.ne(cls.roll(1, 1))
    group_begin = torch.where(group_start, slot, 0).cummax(1)[0]
    tile_start = ((slot - group_begin).remainder(tile).eq(0) & slot.lt(num_valid.unsqueeze(1))).flatten()
    flat_slot = torch.arange(B * N)
    record = flat_slot * 2 + group_start.flatten().long()
    position = tile_start.cumsum(0)
    target = torch.where(tile_start, position - 1, flat_slot + B * N)
    assert len(set(target.tolist())) == B * N  # every slot stores to an entry of its own
    tiles = torch.zeros(2 * B * N, dtype=torch.int64).scatter(0, target, record)[: B * N]
    num_tiles = position[B * N - 1 :]
    first_tiles = torch.where(tiles & 1 == 1, flat_slot, 0).cummax(0)[0]
    return ranks, num_valid, tiles, num_tiles, first_tiles


class Device:
    """Global memory of one call."""

    def __init__(self, boxes, order, ranks, num_valid, tiles, num_tiles, first_tiles, max_output, threshold,
                 zero_exceeds):
        self.B, self.N = order.shape
        self.words = (self.N + WORD - 1) // WORD
        self.boxes = boxes  # [B, N, 4] in score order, box dtype
        self.order = order.numpy()
        self.ranks = ranks.numpy().reshape(-1).copy()
        self.num_valid = num_valid.numpy()
        self.tiles = tiles.numpy()
        self.num_tiles = int(num_tiles[0])
        self.first_tiles = first_tiles.numpy()
        self.tile_status = np.zeros(self.B * self.N, dtype=np.int64)
        self.next_ticket = 0
        self.kept = np.zeros(self.B * self.words, dtype=np.uint64)
        self.M = max_output
        self.threshold = threshold
        self.zero_exceeds = zero_exceeds


def block_exclusive_sum(values):
    values = np.asarray(values, dtype=np.int64)
    return np.cumsum(values) - values, int(values.sum())


def sweep_and_compact(dev, alive, alive_rank, frm, n, staged, k):
    """Thread j tests candidate j against staged[0:k]; the survivors of [frm, n) move to frm + scan."""
    j = np.arange(THREADS)
    mine = (j >= frm) & (j < n)
    survives = mine.copy()
    if k > 0 and mine.any():
        hit = suppresses(staged[:k], alive[torch.from_numpy(j[mine])], dev.threshold, dev.zero_exceeds)
        survives[mine] = ~hit.any(0).numpy()
    before, total = block_exclusive_sum(survives.astype(np.int64))
    box, rank = alive.clone(), alive_rank.copy()  # every thread read its candidate before any moves
    slot = frm + before
    alive[torch.from_numpy(slot[survives])] = box[torch.from_numpy(j[survives])]
    alive_rank[slot[survives]] = rank[j[survives]]
    return frm + total


def overlap_bits(dev, alive, w0, wn):
    """overlap[row]: bit c set if candidate w0+row suppresses w0+c (c > row), as the threads build it."""
    tid = np.arange(THREADS)
    row = tid // ROW_THREADS
    first_column = (tid % ROW_THREADS) * ROW_COLUMNS
    pair = np.zeros((WORD + 1, WORD + 1), dtype=bool)
    word = alive[w0 : w0 + wn]
    pair[:wn, :wn] = suppresses(word, word, dev.threshold, dev.zero_exceeds).numpy()
    c = first_column[:, None] + np.arange(ROW_COLUMNS)[None, :]
    in_loop = (row[:, None] < wn) & (c >= np.maximum(first_column, row + 1)[:, None]) & (c < np.minimum(first_column + ROW_COLUMNS, wn)[:, None])
    hit = in_loop & pair[np.minimum(row, WORD)[:, None], np.minimum(c, WORD)]
    bits = np.bitwise_or.reduce(np.where(hit, np.left_shift(np.uint64(1), c.astype(np.uint64)), np.uint64(0)), axis=1)
    lanes = 1
    while lanes < ROW_THREADS:  # __shfl_xor_sync
        bits = bits | bits[tid ^ lanes]
        lanes <<= 1
    overlap = np.zeros(WORD, dtype=np.uint64)
    overlap[row[tid % ROW_THREADS == 0]] = bits[tid % ROW_THREADS == 0]
    return overlap


def settle_word(overlap, wn, room):
    """Thread 0's greedy over one word: the kept bits."""
    in_word = (1 << WORD) - 1 if wn == WORD else (1 << wn) - 1
    removed = kept = 0
    left = room
    while left > 0:
        open_ = in_word & ~removed & ~kept
        if open_ == 0:
            break
        i = (open_ & -open_).bit_length() - 1
        kept |= 1 << i
        removed |= int(overlap[i])
        left -= 1
    return kept


def greedy_block(dev):
    """One persistent block of greedy_kernel; yields True while waiting, False at other points."""
    N, M = dev.N, dev.M
    tid = np.arange(THREADS)
    while True:
        ticket = dev.next_ticket  # next_ticket.fetch_add(1)
        dev.next_ticket += 1
        yield False
        if ticket >= dev.num_tiles:
            return
        first_slot = int(dev.tiles[ticket]) >> 1
        image = first_slot // N
        begin = first_slot - image * N
        end = int(dev.num_valid[image])
        if ticket + 1 < dev.num_tiles and (int(dev.tiles[ticket + 1]) >> 1) // N == image:
            end = (int(dev.tiles[ticket + 1]) >> 1) - image * N
        first_tile = int(dev.first_tiles[ticket])
        assert int(dev.tiles[first_tile]) & 1 and all(not int(dev.tiles[u]) & 1 for u in range(first_tile + 1, ticket + 1))
        ranks = dev.ranks[image * N : (image + 1) * N]  # a view: writes go to global memory
        boxes = dev.boxes[image]

        n = end - begin
        alive = torch.zeros(THREADS, 5, dtype=boxes.dtype)
        alive_rank = np.zeros(THREADS, dtype=np.int64)
        staged = torch.zeros(THREADS, 5, dtype=boxes.dtype)
        load = tid < n
        alive_rank[load] = ranks[begin + tid[load]]
        alive[torch.from_numpy(tid[load])] = load_box(boxes[torch.from_numpy(alive_rank[load])])

        room = M
        u = first_tile
        while u < ticket and n > 0 and room > 0:
            while dev.tile_status[u] == 0:  # wait_settled
                yield True
            k = int(dev.tile_status[u]) - 1
            room -= k
            if room <= 0:
                break
            u_begin = (int(dev.tiles[u]) >> 1) - image * N
            stage = tid < k
            staged[torch.from_numpy(tid[stage])] = load_box(boxes[torch.from_numpy(ranks[u_begin + tid[stage]].astype(np.int64))])
            n = sweep_and_compact(dev, alive, alive_rank, 0, n, staged, k)
            u += 1
            yield False

        kept_count = 0
        w0 = 0
        while w0 < n and kept_count < room:
            wn = min(WORD, n - w0)
            overlap = overlap_bits(dev, alive, w0, wn)
            kept = settle_word(overlap, wn, room - kept_count)
            for t in range(wn):  # threads t < wn with their kept bit
                if kept >> t & 1:
                    slot = bin(kept & ((1 << t) - 1)).count("1")
                    rank = int(alive_rank[w0 + t])
                    staged[slot] = alive[w0 + t]
                    ranks[begin + kept_count + slot] = rank
                    dev.kept[image * dev.words + rank // WORD] |= np.uint64(1 << (rank % WORD))
            word_kept = bin(kept).count("1")
            kept_count += word_kept
            if w0 + wn < n and kept_count < room:
                n = sweep_and_compact(dev, alive, alive_rank, w0 + wn, n, staged, word_kept)
            w0 += WORD
            yield False

        dev.tile_status[ticket] = kept_count + 1  # publish


def run_blocks(dev, num_blocks, rng):
    """The persistent grid, its blocks interleaved at random; a deadlock raises."""
    blocks = [greedy_block(dev) for _ in range(num_blocks)]
    waiting_steps = 0
    while blocks:
        block = rng.choice(blocks)
        try:
            waiting = next(block)
        except StopIteration:
            blocks.remove(block)
            waiting_steps = 0
            continue
        waiting_steps = waiting_steps + 1 if waiting else 0
        if waiting_steps > 1000 * len(blocks):
            raise AssertionError("greedy_kernel emulation: every block waits (deadlock)")


def write_kept(dev, num_blocks):
    """write_kept_kernel, blocks over images (grid-stride); threads over kept words."""
    B, M, words = dev.B, dev.M, dev.words
    keep = np.full((B, M), 12345, dtype=np.int64)  # garbage: every entry must be written
    counts = np.full(B, 12345, dtype=np.int64)
    for block in range(num_blocks):
        for image in range(block, B, num_blocks):
            kept = dev.kept[image * words : (image + 1) * words]
            order = dev.order[image]
            count = 0
            w0 = 0
            while w0 < words and count < M:
                w = w0 + np.arange(THREADS)
                bits = [int(kept[x]) if x < words else 0 for x in w]
                before, total = block_exclusive_sum([bin(b).count("1") for b in bits])
                for t in range(THREADS):
                    slot = count + int(before[t])
                    b = bits[t]
                    while b and slot < M:
                        keep[image, slot] = order[int(w[t]) * WORD + ((b & -b).bit_length() - 1)]
                        b &= b - 1
                        slot += 1
                count += total
                w0 += THREADS
            count = min(count, M)
            keep[image, count:] = -1
            counts[image] = count
    return torch.from_numpy(keep), torch.from_numpy(counts)


def multi_image_nms(boxes, scores, iou_threshold, idxs=None, valid=None, max_output=None, tile=THREADS,
                    num_blocks=4, seed=0):
    """fastmask.ops.multi_image_nms as the CUDA build computes it (CPU tensors in and out).
    ``tile``: the binding's tile size (the kernel's is THREADS; smaller ones exercise the look-back
    across tiles at small N). ``num_blocks``: persistent blocks, interleaved by ``seed``."""
    assert 1 <= tile <= THREADS
    B, N = scores.shape
    M = N if max_output is None else max_output
    if B == 0 or N == 0 or M == 0:
        return torch.full((B, M), -1, dtype=torch.int64), torch.zeros(B, dtype=torch.int64)
    # nms.cpp
    order = scores.sort(stable=True, dim=1, descending=True)[1]
    sorted_boxes = boxes.gather(1, order.unsqueeze(2).expand(B, N, 4)).contiguous()
    classes = idxs.to(torch.int64).gather(1, order) if idxs is not None else None
    sorted_valid = valid.gather(1, order) if valid is not None else None
    # nms_cuda_ops.cpp, then the launcher
    ranks, num_valid, tiles, num_tiles, first_tiles = group_candidates(order, classes, sorted_valid, tile)
    t = threshold_in(float(iou_threshold), np.float64 if boxes.dtype == torch.float64 else np.float32)
    threshold = torch.tensor(t, dtype=compare_dtype(boxes.dtype))
    zero_exceeds = bool(torch.zeros((), dtype=threshold.dtype) > threshold)
    dev = Device(sorted_boxes, order, ranks, num_valid, tiles, num_tiles, first_tiles, M, threshold, zero_exceeds)
    blocks = max(1, min(num_blocks, B * N))
    run_blocks(dev, blocks, random.Random(seed))
    return write_kept(dev, min(B, blocks))

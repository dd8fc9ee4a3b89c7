"""Random multi-image NMS inputs shared by tests/test_nms.py and tests/test_nms_cuda_emulation.py."""
import math

import torch


def random_case(B, N, dtype, classes=None, valid_fraction=None, ties=False, grid=False, nan=False):
    """Boxes, scores, idxs, valid for B images of N candidates. ``grid``: small integer boxes, so
    that many IoUs are exact simple fractions (0.5 among them); ``ties``: duplicated boxes and
    scores on a coarse grid."""
    if grid:
        xy = torch.randint(0, 6, (B, N, 2)).float()
        wh = torch.randint(1, 5, (B, N, 2)).float()
    else:
        xy = torch.rand(B, N, 2) * 60
        wh = torch.rand(B, N, 2) * 30
    boxes = torch.cat([xy, xy + wh], 2)
    scores = torch.randint(0, 6, (B, N)).float() / 6 if ties else torch.rand(B, N)
    if ties and N > 1:
        src = torch.randint(0, N, (B, N // 3))
        dst = torch.randint(0, N, (B, N // 3))
        boxes.scatter_(1, dst.unsqueeze(2).expand(-1, -1, 4), boxes.gather(1, src.unsqueeze(2).expand(-1, -1, 4)))
    if nan and N > 2:
        boxes[0, 1, 0] = math.nan
        boxes[B - 1, N - 1, 3] = math.nan
    idxs = None
    if classes is not None:
        idxs = torch.randint(0, classes, (B, N))
        if classes > 1:  # extreme ids: no value may serve as a sentinel
            idxs[idxs == 0] = torch.iinfo(torch.int64).max
            idxs[idxs == 1] = torch.iinfo(torch.int64).min
    valid = None
    if valid_fraction is not None:
        valid = torch.rand(B, N) < valid_fraction
        if B > 1:
            valid[1] = False  # an image without candidates
    return boxes.to(dtype), scores.to(dtype), idxs, valid


def tile_chain_boxes(N, tile):
    """N boxes in score order, pairwise disjoint except that the first candidate of every tile
    after the first duplicates the last candidate of the previous tile: each later tile keeps
    all but its first candidate, which only its look-back removes."""
    slot = torch.arange(N)
    slot = torch.where((slot % tile == 0) & (slot > 0), slot - 1, slot).float() * 10
    boxes = torch.stack([slot, torch.zeros(N), slot + 5, torch.full((N,), 5.0)], 1)
    return boxes.unsqueeze(0), torch.linspace(1, 0, N).unsqueeze(0)


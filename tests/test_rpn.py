"""Anchors, box coding and proposal generation against torchvision's AnchorGenerator, BoxCoder and
RegionProposalNetwork (bit for bit where the arithmetic allows), edge cases, bad input."""
import collections
import functools
import math

import pytest
import torch

from conftest import needs_torchvision, torchvision
from fastmask.ops import (AnchorGenerator, BoxCoder, decode_boxes, encode_boxes, generate_proposals, grid_anchors,
                          make_cell_anchors, unpad_proposals)
from fastmask.ops.anchors import level_strides

if torchvision is not None:  # (the tests that use them are @needs_torchvision)
    from torchvision.models.detection import _utils as tv_utils
    from torchvision.models.detection import rpn as tv_rpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    from fastmask.ops import RegionProposalNetwork  # extends torchvision's
else:  # all that fastmask's ops read of an ImageList, for the tests that need nothing else of torchvision
    ImageList = collections.namedtuple("ImageList", ["tensors", "image_sizes"])


FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_RATIOS = ((0.5, 1.0, 2.0),) * 5
STRIDES = (4, 8, 16, 32, 64)
HALF_TYPES = (torch.float16, torch.bfloat16)


def fpn_shapes(height, width):
    """Feature sizes of a ResNet-FPN for a batch padded to a multiple of 32: P2-P5, P6 by max-pool."""
    return [(height // s, width // s) for s in STRIDES[:4]] + [(math.ceil(height / 64), math.ceil(width / 64))]


def image_list(batch, height, width, dtype=torch.float32):
    sizes = [(height - int(torch.randint(0, 32, ())), width - int(torch.randint(0, 32, ()))) for _ in range(batch)]
    return ImageList(torch.zeros(batch, 3, height, width, dtype=dtype), sizes)


def head_outputs(batch, shapes, anchors=3, dtype=torch.float32, spread=3.0, delta_scale=0.5, ties=False):
    objectness = [torch.randn(batch, anchors, h, w) * spread for h, w in shapes]
    if ties:  # logits on a coarse grid: many exactly equal scores
        objectness = [(o * 2).round() / 2 for o in objectness]
    deltas = [torch.randn(batch, 4 * anchors, h, w) * delta_scale for h, w in shapes]
    return [o.to(dtype) for o in objectness], [d.to(dtype) for d in deltas]


def rpn_kwargs(**overrides):
    kwargs = dict(fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
                  pre_nms_top_n=dict(training=2000, testing=1000), post_nms_top_n=dict(training=2000, testing=1000),
                  nms_thresh=0.7)
    kwargs.update(overrides)
    return kwargs


def torchvision_proposals(objectness, deltas, images, sizes=FPN_SIZES, ratios=FPN_RATIOS, **overrides):
    """torchvision's RPN post-processing: anchors, decode of every anchor, filter_proposals."""
    min_size = overrides.pop("min_size", 1e-3)
    rpn = tv_rpn.RegionProposalNetwork(TVAnchorGenerator(sizes, ratios), None, **rpn_kwargs(**overrides))
    rpn.min_size = min_size
    rpn.eval()
    features = [torch.empty(o.shape[0], 1, *o.shape[-2:], dtype=o.dtype) for o in objectness]
    anchors = rpn.anchor_generator(images, features)
    per_level = [o[0].numel() for o in objectness]
    obj, dl = tv_rpn.concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(dl, anchors).view(len(anchors), -1, 4)
    return rpn.filter_proposals(proposals, obj, images.image_sizes, per_level)


def fastmask_proposals(objectness, deltas, images, sizes=FPN_SIZES, ratios=FPN_RATIOS, pre=1000, post=1000,
                       nms_thresh=0.7, score_thresh=0.0, min_size=1e-3):
    cells = AnchorGenerator(sizes, ratios).cell_anchors
    return generate_proposals(objectness, deltas, cells, images.image_sizes, images.tensors.shape[-2:], pre, post,
                              nms_thresh, score_thresh, min_size)


def canonical(boxes, scores):
    """Rows sorted by (score, box): torchvision orders equal scores arbitrarily above 1000 boxes."""
    rows = torch.cat([scores[:, None].double(), boxes.double()], 1)
    for col in reversed(range(rows.shape[1])):
        rows = rows[rows[:, col].sort(stable=True)[1]]
    return rows


def assert_same_proposals(tv, fm, truncated_at=None):
    tv_boxes, tv_scores = tv
    boxes, scores, counts = fm
    for b in range(len(tv_boxes)):
        n = int(counts[b])
        assert n == len(tv_boxes[b]), (b, n, len(tv_boxes[b]))
        assert not boxes[b, n:].any() and not scores[b, n:].any(), "padding must be zeros"
        # Scores (sigmoid of the same logits) are always exact; proposals by decreasing score.
        assert torch.equal(scores[b, :n].sort(descending=True)[0], scores[b, :n])
        assert torch.equal(scores[b, :n], tv_scores[b].sort(descending=True)[0])
        ours, ref = (boxes[b, :n], scores[b, :n]), (tv_boxes[b], tv_scores[b])
        if n == truncated_at and n:
            # torchvision orders equal scores arbitrarily above 1000 boxes, so which of the boxes
            # tied at the cut survive may differ: compare the boxes scored above it.
            cut = scores[b, n - 1]
            ours, ref = [(bx[sc > cut], sc[sc > cut]) for bx, sc in (ours, ref)]
        # Bit for bit: the decode takes torch's own exp on the CPU (whatever library code it runs).
        assert torch.equal(canonical(*ours), canonical(*ref))


# ----------------------------------------------------------------------------------- anchors

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3])
@needs_torchvision
def test_anchors_equal_torchvision(seed, dtype, batch):
    height, width = 32 * int(torch.randint(4, 20, ())), 32 * int(torch.randint(4, 20, ()))
    images = image_list(batch, height, width, dtype)
    features = [torch.empty(batch, 1, h, w, dtype=dtype) for h, w in fpn_shapes(height, width)]
    ours = AnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features)
    ref = TVAnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features)
    assert len(ours) == batch
    for a, r in zip(ours, ref):
        assert a.dtype == r.dtype and torch.equal(a, r)


@needs_torchvision
def test_anchors_paper_preset_and_several_cells_per_level():
    # The paper preset: 1024 x 1024 input, P2-P6.
    images = ImageList(torch.zeros(2, 3, 1024, 1024), [(800, 1024), (1024, 683)])
    features = [torch.empty(2, 1, h, w) for h, w in fpn_shapes(1024, 1024)]
    for a, r in zip(AnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features),
                    TVAnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features)):
        assert torch.equal(a, r)
    # torchvision's default (3 sizes x 3 ratios on one level) and odd sizes/ratios per level.
    for sizes, ratios in [(((128, 256, 512),), ((0.5, 1.0, 2.0),)), (((20, 45), (99,)), ((0.3, 1.7), (1.0, 0.25, 4)))]:
        images = ImageList(torch.zeros(1, 3, 200, 300), [(190, 300)])
        features = [torch.empty(1, 1, 50 // (i + 1), 75 // (i + 1)) for i in range(len(sizes))]
        ours, ref = AnchorGenerator(sizes, ratios), TVAnchorGenerator(sizes, ratios)
        assert torch.equal(ours(images, features)[0], ref(images, features)[0])
        grid, strides = [[50, 75]], [[torch.tensor(4), torch.tensor(4)]]
        if len(sizes) == 1:
            assert torch.equal(ours.grid_anchors(grid, strides)[0], ref.grid_anchors(grid, strides)[0])
        assert ours.num_anchors_per_location() == ref.num_anchors_per_location()


def test_functional_grid_anchors_and_empty_grids():
    cells = [make_cell_anchors((32,), (0.5, 1.0, 2.0)), make_cell_anchors((64,), (1.0,))]
    anchors = grid_anchors(cells, [(3, 5), (0, 4)], [(8, 8), (16, 16)], num_images=2)
    assert anchors.shape == (2, 3 * 5 * 3, 4) and torch.equal(anchors[0], anchors[1])
    assert torch.equal(anchors[0, :3], cells[0])  # location (0, 0) is the cell itself
    assert grid_anchors(cells, [(2, 2), (1, 1)], [(4, 4), (8, 8)], num_images=0).shape == (0, 13, 4)


# --------------------------------------------------------------------------------- box coding

def random_boxes(n, dtype=torch.float32):
    xy = torch.rand(n, 2) * 500
    wh = torch.rand(n, 2) * 200 + 1
    return torch.cat([xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@needs_torchvision
def test_decode_equals_torchvision(seed, dtype, weights):
    boxes = random_boxes(3000, dtype)
    codes = (torch.randn(3000, 4 * 3) * 2).to(dtype)
    codes[::7, 2::4] = 9.0  # beyond the log(1000/16) clamp
    codes[::5, 2:4] = 0.0   # exp(0) = 1: exact everywhere
    ref = tv_utils.BoxCoder(weights).decode_single(codes, boxes)
    ours = decode_boxes(codes, boxes, weights)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    # Bit for bit, exp included: the CPU kernel takes torch's own exp of its exponents.
    assert torch.equal(ours, ref)
    # The list form returns [N, C, 4] like torchvision's.
    split = [1000, 2000]
    coder = BoxCoder(weights)
    assert torch.equal(coder.decode(codes, list(boxes.split(split))),
                       tv_utils.BoxCoder(weights).decode(codes, list(boxes.split(split))))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@needs_torchvision
def test_encode_equals_torchvision_and_round_trips(seed, dtype, weights):
    reference, proposals = random_boxes(2000, dtype), random_boxes(2000, dtype)
    ref = tv_utils.BoxCoder(weights).encode_single(reference, proposals)
    ours = encode_boxes(reference, proposals, weights)
    assert torch.equal(ours, ref)  # log included: torch's own log on the CPU
    if dtype == torch.float64:
        back = decode_boxes(ours, proposals, weights)
        unclamped = (ours[:, 2:] / torch.tensor(weights[2:], dtype=dtype) < math.log(1000 / 16)).all(1)
        assert unclamped.float().mean() > 0.9
        torch.testing.assert_close(back[unclamped], reference[unclamped], rtol=0, atol=1e-9)
    coder = BoxCoder(weights)
    for a, b in zip(coder.encode(list(reference.split([500, 1500])), list(proposals.split([500, 1500]))),
                    tv_utils.BoxCoder(weights).encode(list(reference.split([500, 1500])),
                                                      list(proposals.split([500, 1500])))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float16), (torch.float16, torch.float32),
                                    (torch.bfloat16, torch.float32)])
@needs_torchvision
def test_encode_mixed_dtypes_equal_torchvision(seed, dtypes):
    # Under autocast the box head encodes fp32 targets against fp16 proposals: torchvision computes
    # each side in its own dtype and promotes at the end.
    reference, proposals = random_boxes(500, dtypes[0]), random_boxes(500, dtypes[1])
    weights = (10.0, 10.0, 5.0, 5.0)
    ours = encode_boxes(reference, proposals, weights)
    assert torch.equal(ours, tv_utils.BoxCoder(weights).encode_single(reference, proposals))
    assert ours.dtype == torch.promote_types(*dtypes)


def test_box_coding_gradcheck(seed):
    boxes = random_boxes(6, torch.float64).requires_grad_()
    codes = (torch.randn(6, 8, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, b: decode_boxes(c, b, (10.0, 10.0, 5.0, 5.0)), (codes, boxes))
    reference = random_boxes(6, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, p: encode_boxes(r, p, (10.0, 10.0, 5.0, 5.0)), (reference, boxes))


@needs_torchvision
def test_box_coding_nan_and_empty():
    boxes = random_boxes(2)
    codes = torch.tensor([[float("nan"), 0, 0, 0], [0, 0, float("inf"), 0]])
    ref = tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(codes, boxes)
    torch.testing.assert_close(decode_boxes(codes, boxes), ref, rtol=0, atol=0, equal_nan=True)
    assert decode_boxes(torch.empty(0, 8), torch.empty(0, 4)).shape == (0, 8)
    assert encode_boxes(torch.empty(0, 4), torch.empty(0, 4)).shape == (0, 4)


# --------------------------------------------------------------------------- proposals

@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("zero_size_deltas", [False, True])
@needs_torchvision
def test_generate_proposals_equals_filter_proposals(seed, training, zero_size_deltas):
    # zero_size_deltas: dw = dh = 0, so exp(0) = 1 exactly; bit-equal either way.
    batch, height, width = 2, 256, 320
    images = image_list(batch, height, width)
    objectness, deltas = head_outputs(batch, fpn_shapes(height, width))
    if zero_size_deltas:
        for d in deltas:
            d.view(batch, 3, 4, *d.shape[-2:])[:, :, 2:] = 0
    pre, post = (2000, 2000) if training else (1000, 1000)
    tv = torchvision_proposals(objectness, deltas, images,
                               pre_nms_top_n=dict(training=pre, testing=pre),
                               post_nms_top_n=dict(training=post, testing=post))
    fm = fastmask_proposals(objectness, deltas, images, pre=pre, post=post)
    assert fm[0].shape == (batch, post, 4) and fm[1].shape == (batch, post) and fm[2].dtype == torch.int64
    assert_same_proposals(tv, fm, truncated_at=post)


@needs_torchvision
def test_generate_proposals_ties_thresholds_and_small_levels(seed):
    # Tied scores, a score threshold, a min size that removes boxes, top-n larger than a level,
    # post_nms_top_n truncating: still torchvision's proposals.
    images = image_list(3, 128, 160)
    objectness, deltas = head_outputs(3, fpn_shapes(128, 160), ties=True, delta_scale=1.0)
    for d in deltas:
        d.view(3, 3, 4, *d.shape[-2:])[:, :, 2:] = 0
    kwargs = dict(nms_thresh=0.5, score_thresh=0.3, min_size=20.0)
    tv = torchvision_proposals(objectness, deltas, images, pre_nms_top_n=dict(training=300, testing=300),
                               post_nms_top_n=dict(training=150, testing=150), **kwargs)
    fm = fastmask_proposals(objectness, deltas, images, pre=300, post=150, **kwargs)
    assert_same_proposals(tv, fm)


def test_generate_proposals_empty_results():
    images = image_list(2, 64, 64)
    objectness, deltas = head_outputs(2, fpn_shapes(64, 64))
    cells = AnchorGenerator(FPN_SIZES, FPN_RATIOS).cell_anchors
    size = images.tensors.shape[-2:]
    # Every score below the threshold; every box smaller than min_size; post_nms_top_n = 0.
    for kwargs in (dict(score_thresh=1.1), dict(min_size=1e6), dict(post_nms_top_n=0)):
        boxes, scores, counts = generate_proposals(objectness, deltas, cells, images.image_sizes, size, **kwargs)
        assert counts.tolist() == [0, 0] and not boxes.any() and not scores.any()
    # Images clipped to nothing (size 0): every box has zero width.
    boxes, scores, counts = generate_proposals(objectness, deltas, cells, [(0, 0), (64, 64)], size)
    assert counts[0] == 0 and counts[1] > 0
    assert [len(b) for b in unpad_proposals(boxes, counts)] == counts.tolist()


def torchvision_candidates(objectness, deltas, images, pre, min_size, score_thresh, weights):
    """torchvision's filter_proposals up to NMS: per-level top-k, sigmoid, clip, size and score filters."""
    features = [torch.empty(o.shape[0], 1, *o.shape[-2:], dtype=o.dtype) for o in objectness]
    anchors = TVAnchorGenerator(FPN_SIZES, FPN_RATIOS)(images, features)
    obj, dl = tv_rpn.concat_box_prediction_layers(objectness, deltas)
    proposals = tv_utils.BoxCoder(weights).decode(dl, anchors).view(len(anchors), -1, 4)
    obj = obj.reshape(len(anchors), -1)
    top, offset = [], 0
    for level in obj.split([o[0].numel() for o in objectness], 1):
        top.append(level.topk(min(pre, level.shape[1]), dim=1)[1] + offset)
        offset += level.shape[1]
    top = torch.cat(top, 1)
    rows = torch.arange(len(anchors))[:, None]
    out = []
    for boxes, scores, shape in zip(proposals[rows, top], torch.sigmoid(obj[rows, top]), images.image_sizes):
        boxes = torchvision.ops.clip_boxes_to_image(boxes, shape)
        keep = torchvision.ops.remove_small_boxes(boxes, min_size)
        boxes, scores = boxes[keep], scores[keep]
        keep = scores >= score_thresh
        out.append((boxes[keep], scores[keep]))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (3.3, 0.7, 1.9, 2.2)])
@needs_torchvision
def test_candidates_equal_torchvision_in_every_dtype(seed, dtype, weights):
    # torchvision's CPU NMS has no fp16/bf16, so compare everything up to NMS: with nms_thresh 1
    # nothing is suppressed and the output is every candidate by decreasing score.
    images = image_list(2, 128, 160, dtype)
    objectness, deltas = head_outputs(2, fpn_shapes(128, 160), dtype=dtype, delta_scale=1.5)
    if dtype in (torch.float32, torch.float64):  # no exp rounding differences: bit-equal everywhere
        for d in deltas:
            d.view(2, 3, 4, *d.shape[-2:])[:, :, 2:] = 0
    cells = AnchorGenerator(FPN_SIZES, FPN_RATIOS).cell_anchors
    boxes, scores, counts = generate_proposals(objectness, deltas, cells, images.image_sizes, (128, 160), 300,
                                               5000, 1.0, 0.2, 4.0, weights)
    assert boxes.dtype == dtype and scores.dtype == dtype
    for b, (ref_boxes, ref_scores) in enumerate(torchvision_candidates(objectness, deltas, images, 300, 4.0, 0.2,
                                                                       weights)):
        n = int(counts[b])
        assert n == len(ref_boxes) and n > 0
        assert torch.equal(canonical(boxes[b, :n], scores[b, :n]), canonical(ref_boxes, ref_scores))


def test_generate_proposals_layouts_and_edge_shapes(seed):
    images = image_list(2, 128, 160)
    objectness, deltas = head_outputs(2, fpn_shapes(128, 160))
    cells = AnchorGenerator(FPN_SIZES, FPN_RATIOS).cell_anchors
    ref = generate_proposals(objectness, deltas, cells, images.image_sizes, (128, 160), 200, 300)
    # channels_last and channel-sliced (strided) head outputs read in place: the same proposals.
    strided = [torch.cat([d, d], 1)[:, ::2] for d in deltas]
    for obj, dl in (([o.contiguous(memory_format=torch.channels_last) for o in objectness],
                     [d.contiguous(memory_format=torch.channels_last) for d in deltas]),
                    (objectness, [torch.stack([d, d], 2).flatten(1, 2)[:, ::2] for d in deltas])):
        for a, b in zip(generate_proposals(obj, dl, cells, images.image_sizes, (128, 160), 200, 300), ref):
            assert torch.equal(a, b)
    assert all(not d.is_contiguous() for d in strided)
    # post_nms_top_n above the candidate count: padded with zeros after counts.
    boxes, scores, counts = generate_proposals(objectness, deltas, cells, images.image_sizes, (128, 160), 10, 500)
    assert boxes.shape == (2, 500, 4) and int(counts.max()) <= 50 and not boxes[:, 50:].any()
    # NaN logits and deltas: those candidates are dropped, as torchvision's filters drop them.
    objectness[0][:, :, 0, 0] = float("nan")
    deltas[1][:, :, 1, 1] = float("nan")
    boxes, scores, counts = generate_proposals(objectness, deltas, cells, images.image_sizes, (128, 160))
    assert not boxes.isnan().any() and not scores.isnan().any()
    # An empty level (no anchors) and B = 0.
    empty = [torch.zeros(2, 3, 0, 5)] + objectness[1:]
    empty_d = [torch.zeros(2, 12, 0, 5)] + deltas[1:]
    boxes, _, counts = generate_proposals(empty, empty_d, cells, images.image_sizes, (128, 160))
    assert boxes.shape == (2, 1000, 4) and (counts > 0).all()
    none = generate_proposals([o[:0] for o in objectness], [d[:0] for d in deltas], cells,
                              torch.zeros(0, 2, dtype=torch.int64), (128, 160))
    assert none[0].shape == (0, 1000, 4) and none[2].shape == (0,)


def test_level_limit():
    cells = [make_cell_anchors((8,), (1.0,))]
    assert grid_anchors(cells * 16, [(1, 1)] * 16, [(4, 4)] * 16).shape == (1, 16, 4)
    with pytest.raises(ValueError, match="1 to 16 feature levels"):
        grid_anchors(cells * 17, [(1, 1)] * 17, [(4, 4)] * 17)


@needs_torchvision
def test_region_proposal_network_drop_in(seed):
    images = image_list(2, 160, 192)
    features = {str(i): torch.randn(2, 8, h, w) for i, (h, w) in enumerate(fpn_shapes(160, 192))}
    head = tv_rpn.RPNHead(8, 3)
    for p in head.parameters():  # spread the logits: scores near 0.5 tie in float32
        torch.nn.init.normal_(p, std=0.5)
    kwargs = rpn_kwargs(pre_nms_top_n=dict(training=600, testing=300), post_nms_top_n=dict(training=500, testing=200))
    tv = tv_rpn.RegionProposalNetwork(TVAnchorGenerator(FPN_SIZES, FPN_RATIOS), head, **kwargs)
    ours = RegionProposalNetwork(AnchorGenerator(FPN_SIZES, FPN_RATIOS), head, **kwargs)
    assert ours.state_dict().keys() == tv.state_dict().keys()
    with torch.no_grad():
        for mode in (False, True):
            tv.train(mode)
            ours.train(mode)
            targets = [{"boxes": random_boxes(4) / 4} for _ in range(2)]
            torch.manual_seed(1)
            tv_boxes, tv_losses = tv(images, features, targets)
            torch.manual_seed(1)
            boxes, losses = ours(images, features, targets)
            assert [len(b) for b in boxes] == [len(b) for b in tv_boxes]
            for a, b in zip(boxes, tv_boxes):
                assert torch.equal(canonical(a, a[:, 0])[:, 1:], canonical(b, b[:, 0])[:, 1:])
            assert losses.keys() == tv_losses.keys()
            for k in losses:
                assert torch.equal(losses[k], tv_losses[k]), k
    # A torchvision AnchorGenerator works too (the RPN only reads its cell anchors).
    mixed = RegionProposalNetwork(TVAnchorGenerator(FPN_SIZES, FPN_RATIOS), head, **kwargs).eval()
    with torch.no_grad():
        assert [len(b) for b in mixed(images, features)[0]] == [len(b) for b in ours.eval()(images, features)[0]]


# ------------------------------------------------------------------ compile, opcheck, bad input

def test_opcheck(seed):
    cells = [make_cell_anchors((32,), (0.5, 1.0, 2.0)), make_cell_anchors((64,), (0.5, 1.0, 2.0))]
    torch.library.opcheck(torch.ops.fastmask.grid_anchors.default, (cells, [4, 5, 2, 3], [8, 8, 16, 16], 2))
    codes, boxes = torch.randn(20, 8), random_boxes(20)
    torch.library.opcheck(torch.ops.fastmask.decode_boxes.default, (codes, boxes, [10.0, 10.0, 5.0, 5.0], 4.0))
    torch.library.opcheck(torch.ops.fastmask.encode_boxes.default,
                          (random_boxes(20).requires_grad_(), boxes.requires_grad_(), [10.0, 10.0, 5.0, 5.0]))
    objectness, deltas = head_outputs(2, [(8, 10), (4, 5)])
    sizes = torch.tensor([[30, 40], [32, 36]])
    torch.library.opcheck(torch.ops.fastmask.generate_proposals.default,
                          (objectness, deltas, cells, [4, 4, 8, 8], sizes, 50, 20, 0.7, 0.0, 1e-3,
                           [1.0, 1.0, 1.0, 1.0], 4.0))


def test_compile_fullgraph(seed):
    objectness, deltas = head_outputs(2, [(8, 10), (4, 5)])
    cells = [make_cell_anchors((32,), (0.5, 1.0, 2.0)), make_cell_anchors((64,), (0.5, 1.0, 2.0))]
    sizes = torch.tensor([[30, 40], [32, 36]])

    def f(o, d):
        return generate_proposals(o, d, cells, sizes, (32, 40), 50, 20)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for ours, ref in zip(compiled(objectness, deltas), f(objectness, deltas)):
        assert torch.equal(ours, ref)


def _proposal_args():
    objectness, deltas = head_outputs(1, [(4, 4), (2, 2)])
    cells = [make_cell_anchors((32,), (0.5, 1.0, 2.0))] * 2
    return objectness, deltas, cells


@pytest.mark.parametrize("call, exc, match", [
    (lambda o, d, c: generate_proposals(o, d[:1], c, [(16, 16)], (16, 16)), ValueError, "pred_bbox_deltas"),
    (lambda o, d, c: generate_proposals(o, d, c[:1], [(16, 16)], (16, 16)), ValueError, "cell_anchors"),
    (lambda o, d, c: generate_proposals(o, [d[0][:, :8], d[1]], c, [(16, 16)], (16, 16)), ValueError,
     r"pred_bbox_deltas\[0\] must have shape"),
    (lambda o, d, c: generate_proposals(o, d, c, [(16, 16), (8, 8)], (16, 16)), ValueError, "image_sizes"),
    (lambda o, d, c: generate_proposals(o, d, [c[0][:2], c[1]], [(16, 16)], (16, 16)), ValueError,
     "anchors per location"),
    (lambda o, d, c: generate_proposals(o, d, c, [(16, 16)], (16, 16), pre_nms_top_n=0), ValueError,
     "pre_nms_top_n"),
    (lambda o, d, c: generate_proposals(o[0], d, c, [(16, 16)], (16, 16)), TypeError, "objectness"),
    (lambda o, d, c: generate_proposals([o[0].half(), o[1]], d, c, [(16, 16)], (16, 16)), TypeError, "dtype"),
    (lambda o, d, c: decode_boxes(torch.zeros(3, 5), torch.zeros(3, 4)), ValueError, "rel_codes"),
    (lambda o, d, c: decode_boxes(torch.zeros(3, 4), torch.zeros(3, 4), weights=(1, 1)), ValueError, "weights"),
    (lambda o, d, c: encode_boxes(torch.zeros(3, 4), torch.zeros(2, 4)), ValueError, "proposals"),
    (lambda o, d, c: encode_boxes(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4, dtype=torch.int64)),
     TypeError, "float32, float64"),
    (lambda o, d, c: grid_anchors(c, [(4, 4)], [(8, 8)] * 2), ValueError, "grid_sizes"),
    (lambda o, d, c: AnchorGenerator(FPN_SIZES, FPN_RATIOS)(image_list(1, 64, 64), [torch.zeros(1, 1, 16, 16)]),
     ValueError, "5 feature levels"),
])
def test_bad_input_raises_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(*_proposal_args())


# ----------------------------------------------------------------------------------- CUDA

def tie_free_logits(batch, shapes, dtype, anchors=3):
    """Objectness on which the CPU's and CUDA's proposals must agree. Per image and level the logits
    all differ: tied logits at the top-k cut are picked differently by the two devices' top-k.
    The CPU's sigmoid (SLEEF's exp) and CUDA's (expf) differ by float32 ulps, so
    float32/float64: scores spaced ~1 / (anchors in the level) apart, which no such difference
    can reorder; fp16/bf16: logits whose float32 sigmoid lies more than 1e-5 (relative) from a
    rounding boundary of the dtype, so both devices round it to the same score (ties in score then
    remain, broken by candidate order on both)."""
    out = []
    for h, w in shapes:
        n = anchors * h * w
        if dtype in HALF_TYPES:
            pool = half_logit_pool(dtype)
            # Distinct draws, roughly N(0, 3^2): weight each value by the density times its spacing.
            weights = torch.exp(-0.5 * (pool / 3) ** 2) * torch.cat([pool.diff(), pool.diff()[-1:]])
            level = torch.stack([pool[torch.multinomial(weights, n)] for _ in range(batch)])
        else:
            spaced = (torch.stack([torch.randperm(n) for _ in range(batch)]).double() + 0.5) / n * 0.96 + 0.02
            level = torch.log(spaced / (1 - spaced))
        # Anchor (y, x, a) of level [B, A, H, W]: any bijection will do, the values are a permutation.
        out.append(level.view(batch, anchors, h, w).to(dtype))
    return out


@functools.lru_cache(maxsize=None)
def half_logit_pool(dtype):
    """Every value of `dtype` in [-12, 12] (zero once) whose sigmoid is safely inside one rounding
    interval of the dtype (see tie_free_logits), ascending, as float64."""
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).double()
    values = values[torch.isfinite(values) & (values.abs() <= 12)].unique()  # sorted; -0 and 0 merge
    s = torch.sigmoid(values)
    safe = (s * (1 - 1e-5)).to(dtype) == (s * (1 + 1e-5)).to(dtype)
    return values[safe]


def assert_same_proposals_on_both_devices(gpu, cpu):
    """Counts and boxes equal; scores within 1e-6 (see tie_free_logits: a few float32 ulps of a
    value below 1 in float32/float64, exact in fp16/bf16), compared as (score, box) rows."""
    assert torch.equal(gpu[2].cpu(), cpu[2])
    for b in range(len(cpu[2])):
        n = int(cpu[2][b])
        ours = canonical(gpu[0][b, :n].cpu(), gpu[1][b, :n].cpu())
        ref = canonical(cpu[0][b, :n], cpu[1][b, :n])
        torch.testing.assert_close(ours[:, 0], ref[:, 0], rtol=0, atol=1e-6)
        assert torch.equal(ours[:, 1:], ref[:, 1:])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_equals_cpu(seed, dtype):
    images = image_list(2, 256, 320, dtype)
    features = [torch.empty(2, 1, h, w, dtype=dtype) for h, w in fpn_shapes(256, 320)]
    gen = AnchorGenerator(FPN_SIZES, FPN_RATIOS)
    cuda_images = ImageList(images.tensors.cuda(), images.image_sizes)
    for a, b in zip(gen(images, features), gen(cuda_images, [f.cuda() for f in features])):
        assert torch.equal(a, b.cpu())
    boxes, codes = random_boxes(500, dtype), (torch.randn(500, 8) * 2).to(dtype)
    weights = (10.0, 10.0, 5.0, 5.0)
    atol = 0.25 if dtype in HALF_TYPES else 1e-3
    torch.testing.assert_close(decode_boxes(codes.cuda(), boxes.cuda(), weights).cpu(),
                               decode_boxes(codes, boxes, weights), rtol=0, atol=atol)
    torch.testing.assert_close(encode_boxes(boxes.cuda(), boxes.flip(0).cuda(), weights).cpu(),
                               encode_boxes(boxes, boxes.flip(0), weights), rtol=0, atol=atol)
    shapes = fpn_shapes(256, 320)
    _, deltas = head_outputs(2, shapes, dtype=dtype)
    objectness = tie_free_logits(2, shapes, dtype)
    for d in deltas:  # dw = dh = 0: no exp, so the boxes are bit-equal
        d.view(2, 3, 4, *d.shape[-2:])[:, :, 2:] = 0
    cpu = fastmask_proposals(objectness, deltas, images)
    gpu = fastmask_proposals([o.cuda() for o in objectness], [d.cuda() for d in deltas], cuda_images)
    assert_same_proposals_on_both_devices(gpu, cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (3.3, 0.7, 1.9, 2.2)])
@needs_torchvision
def test_cuda_box_coding_equals_torchvision_on_cuda(seed, dtype, weights):
    # Both use CUDA's expf/logf, and ATen's division by a Python scalar (a multiply by its
    # reciprocal on CUDA), which the device arithmetic copies: bit-equal.
    boxes, codes = random_boxes(3000, dtype).cuda(), (torch.randn(3000, 8) * 2).to(dtype).cuda()
    coder = tv_utils.BoxCoder(weights)
    assert torch.equal(decode_boxes(codes, boxes, weights), coder.decode_single(codes, boxes))
    reference = random_boxes(3000, dtype).cuda()
    assert torch.equal(encode_boxes(reference, boxes, weights), coder.encode_single(reference, boxes))


@pytest.mark.cuda
@needs_torchvision
def test_cuda_generate_proposals_at_full_size_without_sync_and_in_a_graph(seed):
    # 2 images 800 x 1344 at the training settings: 201,600 anchors on P2 and 8,819 candidates per
    # image (over 4096: ATen's multi-block top-k and radix-sort paths run). Nothing may wait for
    # the device, and the whole call must capture into a CUDA graph whose replay on new head
    # outputs equals an eager call on them.
    from fastmask.engine.bench import cuda_graph

    shapes = fpn_shapes(800, 1344)
    cells = [c.cuda() for c in AnchorGenerator(FPN_SIZES, FPN_RATIOS).cell_anchors]
    sizes = torch.tensor([[800, 1344], [781, 1200]], device="cuda")
    objectness, deltas = ([t.cuda() for t in ts] for ts in head_outputs(2, shapes))

    def propose():
        return generate_proposals(objectness, deltas, cells, sizes, (800, 1344), 2000, 2000, 0.7)

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        boxes, scores, counts = propose()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    replay, captured = cuda_graph(propose)  # a host sync inside would fail the capture
    assert boxes.shape == (2, 2000, 4) and (counts > 1000).all()
    for static, new in zip(objectness + deltas, [t.cuda() for ts in head_outputs(2, shapes) for t in ts]):
        static.copy_(new)
    replay()
    for ours, ref in zip(captured, propose()):
        assert torch.equal(ours, ref)
    assert not torch.equal(captured[0], boxes)  # the replay computed the new inputs' proposals


@pytest.mark.cuda
def test_cuda_grid_anchors_for_100_images(seed):
    # 100 images 800 x 1344, P2-P6: 26.9 M anchors, more than one grid of 65535 blocks of 256
    # threads covers (16.8 M), so the grid-stride loop's second pass writes the rest. New
    # outputs are NaN-filled first (deterministic mode), so an unwritten anchor shows.
    cells = AnchorGenerator(FPN_SIZES, FPN_RATIOS).cell_anchors
    shapes = fpn_shapes(800, 1344)
    strides = level_strides((800, 1344), shapes)
    torch.use_deterministic_algorithms(True)
    try:
        anchors = grid_anchors([c.cuda() for c in cells], shapes, strides, num_images=100)
    finally:
        torch.use_deterministic_algorithms(False)
    assert anchors.shape == (100, 268569, 4)
    assert torch.equal(anchors.cpu(), grid_anchors(cells, shapes, strides, num_images=100))


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_rpn_ops_on_the_second_gpu(seed):
    # The current device stays cuda:0: each op must run on its inputs' device (device guard).
    device = torch.device("cuda", 1)
    shapes = fpn_shapes(128, 160)
    cells = AnchorGenerator(FPN_SIZES, FPN_RATIOS).cell_anchors
    strides = level_strides((128, 160), shapes)
    anchors = grid_anchors([c.to(device) for c in cells], shapes, strides, num_images=2)
    assert anchors.device == device and torch.equal(anchors.cpu(), grid_anchors(cells, shapes, strides, 2))
    boxes, codes = random_boxes(300), torch.randn(300, 8)
    torch.testing.assert_close(decode_boxes(codes.to(device), boxes.to(device)).cpu(), decode_boxes(codes, boxes),
                               rtol=0, atol=1e-3)
    torch.testing.assert_close(encode_boxes(boxes.to(device), boxes.flip(0).to(device)).cpu(),
                               encode_boxes(boxes, boxes.flip(0)), rtol=0, atol=1e-5)
    images = image_list(2, 128, 160)
    objectness, deltas = tie_free_logits(2, shapes, torch.float32), head_outputs(2, shapes)[1]
    for d in deltas:
        d.view(2, 3, 4, *d.shape[-2:])[:, :, 2:] = 0
    cpu = fastmask_proposals(objectness, deltas, images)
    gpu = fastmask_proposals([o.to(device) for o in objectness], [d.to(device) for d in deltas], images)
    assert gpu[0].device == device
    assert_same_proposals_on_both_devices(gpu, cpu)

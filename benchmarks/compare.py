"""fastmask vs torchvision, same inputs, same run: the main job.

    python benchmarks/compare.py                 # every op, default detection workload
    python benchmarks/compare.py --op roi_align  # one op (substring match on the op name)
    python benchmarks/compare.py --device cpu --repeats 20

Prints a table (op, workload, torchvision ms, fastmask ms, speed-up, max |difference|) and
writes <device>-<date>.{md,json,png} under benchmarks/results/. Times are medians of
--repeats runs after warm-up (CUDA: CUDA events; CPU: perf_counter), torchvision's and fastmask's
runs alternating, so that a drift in the machine's speed reaches both sides alike; --case-budget-s
stops timing a case once either side's runs pass that many seconds (at least 3 runs each). On
CUDA the table also gives fastmask's achieved bandwidth where an op is bound by memory traffic:
the fewest bytes it must move (each input read once, each output written once) over its time, as
a fraction of a large device-to-device copy measured at the start. The model rows on CUDA are eager inference at
batch 1 and 8, and forward_static (plus mask pasting) replayed from a CUDA graph in float32,
bfloat16 and float16 (torchvision in eager mode, under bfloat16 / float16 autocast for those rows;
fastmask's bf16/fp16 models are fastmask.models.optimize_for_inference's). On the CPU the
fast-path rows run optimize_for_inference (bf16 networks, channels_last, batch norms folded;
boxes, scores, NMS and pasting in float32) against torchvision's float32 model and against
torchvision's model in channels_last under bfloat16 autocast; then, on one static workload
(uint8 images in a padded canvas), eager forward_static + pasting (StaticMaskRCNN) in float32
and the fast path, each followed by the package fastmask.models.export.export_static compiles
from it (torch.export + AOTInductor), with the package's speed-up over the eager row in a second
table. --export adds the package rows on CUDA too (batch 8; off by default there: each package
compiles for minutes); --no-export leaves them out on the CPU. Packages are compiled once and
cached in benchmarks/.cache/ (gitignored), keyed by torch, fastmask's sources, the weights,
shapes, precision and machine.
A case that raises is reported and skipped; the exit status is then 1.
"""
import argparse
import copy
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional

import torch
import torchvision
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform as TvTransform

import fastmask
from fastmask.engine.bench import cuda_graph, detections_differ, model_pair, time_interleaved_ms, time_ms
from fastmask.models import optimize_for_inference
from fastmask.models.inference import PRECISIONS
from fastmask.models.export import StaticMaskRCNN, export_static
from fastmask.ops import (AnchorGenerator, BoxCoder, GeneralizedRCNNTransform, MultiScaleRoIAlign, batched_nms,
                          generate_proposals, multi_image_nms, nms, paste_masks_in_image, resize_bilinear, roi_align)

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Row:
    op: str
    workload: str
    torchvision_ms: float
    fastmask_ms: float
    speedup: float
    max_abs_diff: float
    fastmask_gbs: Optional[float] = None  # CUDA, memory-bound cases: Case.bytes / fastmask time
    copy_fraction: Optional[float] = None  # fastmask_gbs / the measured copy bandwidth
    error: Optional[str] = None  # the case raised: times are NaN
    # Case.versus: the other fastmask row ("op: workload"), its fastmask time, and that over this one's
    versus: Optional[str] = None
    versus_ms: Optional[float] = None
    versus_speedup: Optional[float] = None


@dataclass
class Case:
    op: str
    workload: str
    torchvision: Callable[[], object]
    fastmask: Callable[[], object]
    # (torchvision result, fastmask result) -> the "max abs diff" column; default: tensors' max |a - b|
    compare: Optional[Callable[[object, object], float]] = None
    # fastmask result -> the fewest bytes fastmask's op must move (inputs read once, outputs
    # written once); None where the op is not bound by memory traffic (NMS, proposals, the model)
    bytes: Optional[Callable[[object], int]] = None
    # Another case of the same run whose fastmask side this one's is also compared with (the
    # exported package against eager forward_static, on the same inputs): its fastmask time over
    # this case's is reported beside the table.
    versus: Optional["Case"] = None


def nbytes(*tensors) -> int:
    """Bytes of tensors, lists and dicts of tensors."""
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        elif isinstance(t, dict):
            total += nbytes(*t.values())
        elif isinstance(t, (list, tuple)):
            total += nbytes(*t)
    return total


def copy_bandwidth_gbs(device: torch.device, megabytes: int = 1024) -> float:
    """A device-to-device copy of `megabytes`, in GB/s counting bytes read plus bytes written
    (median of 20 after warm-up): the practical ceiling for memory-bound kernels."""
    src = torch.rand(megabytes * 2**18, device=device)  # float32: 4 bytes each
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, 20, 3)
    return 2 * nbytes(src) / (ms * 1e-3) / 1e9


def max_abs_diff(ref: torch.Tensor, ours: torch.Tensor) -> float:
    return (ours.float() - ref.float()).abs().max().item() if ref.numel() else 0.0


def kept_mismatch(scores: torch.Tensor, keep_first: Optional[int] = None):
    """NMS comparison: the number of images whose kept boxes differ (0: identical). Kept boxes are
    compared as sets and as score sequences: torchvision orders the result of its per-class path
    (over 1000 boxes on the CPU) with an unstable sort, so the order of tied scores is arbitrary
    there. `ref`: a tensor or a list per image; `ours`: a tensor or (keep [B, M], counts [B])."""
    per_image = scores if scores.dim() == 2 else scores[None]

    def compare(ref, ours) -> float:
        refs = ref if isinstance(ref, list) else [ref]
        if isinstance(ours, tuple):
            keep, counts = ours
            ours = [keep[b, : counts[b]] for b in range(len(counts))]
        else:
            ours = [ours]
        differ = 0
        for s, a, b in zip(per_image, refs, ours):
            a, b = a[:keep_first].cpu(), b.cpu()
            s = s.cpu()
            differ += not (torch.equal(a.sort()[0], b.sort()[0]) and torch.equal(s[a], s[b]))
        return float(differ)

    return compare


def detection_rois(num, batch, image_hw, device, seed=0):
    """Proposal-like boxes: log-uniform sizes from 16 px to the image, anywhere in it."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    size = torch.exp(torch.rand(num, 2, generator=g) * (torch.log(torch.tensor(float(max(h, w)))) - 2.77) + 2.77)
    xy = torch.rand(num, 2, generator=g) * torch.tensor([w, h]) - size / 4
    idx = torch.randint(0, batch, (num, 1), generator=g).float()
    return torch.cat([idx, xy, xy + size], 1).to(device)


def builds(*ops: str):
    """Names the ops a case builder makes, so that --op can leave out building inputs for cases
    it would drop (all_cases still filters the cases themselves by their own names)."""
    def mark(builder):
        builder.ops = ops
        return builder
    return mark


@builds("roi_align forward", "roi_align backward", "roi_align backward (deterministic)")
def roi_align_cases(device, dtype, channels_last):
    # The detection workload: 2 x 256 x 200 x 200 (P2 of an 800 x 800 image), 1000 RoIs, 7 x 7,
    # sampling_ratio 2, aligned, spatial_scale 1/4.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 256, 200, 200, generator=g).to(device=device, dtype=dtype)
    rois = detection_rois(1000, 2, (800, 800), device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x_f = x.contiguous(memory_format=fmt)
    layout = "channels_last" if channels_last else "NCHW"
    dt = str(dtype).replace("torch.", "")
    work = f"2x256x200x200 {layout} {dt}, 1000 RoIs, 7x7, sr=2"
    cases = [
        Case("roi_align forward", work,
             lambda: torchvision.ops.roi_align(x_f, rois, 7, 0.25, 2, True),
             lambda: roi_align(x_f, rois, 7, 0.25, 2, True), bytes=lambda out: nbytes(x_f, rois, out)),
    ]
    grad = torch.randn(1000, 256, 7, 7, generator=g).to(device=device, dtype=dtype)
    tv_bwd = lambda: torch.ops.torchvision._roi_align_backward(grad, rois, 0.25, 7, 7, 2, 256, 200, 200, 2, True)  # noqa: E731
    cases.append(Case("roi_align backward", work, tv_bwd,
                      lambda: torch.ops.fastmask.roi_align_backward(
                          grad, rois, 0.25, 7, 7, 2, 256, 200, 200, 2, True, channels_last, False),
                      bytes=lambda out: nbytes(grad, rois, out)))
    if device.type == "cuda":
        cases.append(Case("roi_align backward (deterministic)", work, tv_bwd,
                          lambda: torch.ops.fastmask.roi_align_backward(
                              grad, rois, 0.25, 7, 7, 2, 256, 200, 200, 2, True, channels_last, True),
                          bytes=lambda out: nbytes(grad, rois, out)))
    if device.type == "cuda" and not channels_last:
        m_rois = detection_rois(512, 2, (800, 800), device, seed=2)
        work14 = f"2x256x200x200 NCHW {dt}, 512 RoIs, 14x14, sr=2 (mask head)"
        cases.append(Case("roi_align forward", work14,
                          lambda: torchvision.ops.roi_align(x, m_rois, 14, 0.25, 2, True),
                          lambda: roi_align(x, m_rois, 14, 0.25, 2, True), bytes=lambda out: nbytes(x, m_rois, out)))
    return cases


@builds("MultiScaleRoIAlign forward", "MultiScaleRoIAlign forward+backward")
def multiscale_cases(device, dtype):
    # torchvision's Mask R-CNN box head: FPN P2-P5 of a batch of 2 images padded to 800 x 1216,
    # 1000 proposals per image (eval), 7 x 7, sampling_ratio 2.
    g = torch.Generator().manual_seed(3)
    feats = OrderedDict()
    for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32)):
        feats[name] = torch.randn(2, 256, 800 // stride, 1216 // stride, generator=g).to(device=device, dtype=dtype)
    image_shapes = [(800, 1216), (800, 1066)]
    rois = detection_rois(2000, 2, (800, 1216), device, seed=4)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    names = list(feats)
    ours = MultiScaleRoIAlign(names, 7, 2)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    leaves_f = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    leaves_t = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
    dt = str(dtype).replace("torch.", "")
    work = f"P2-P5 of 2x256x800x1216 {dt}, 2000 RoIs, 7x7, sr=2"
    grad = torch.randn(2000, 256, 7, 7, generator=g).to(device=device, dtype=dtype)

    def fwd_bwd(module, leaves):
        def run():
            out = module(leaves, boxes, image_shapes)
            torch.autograd.grad(out, list(leaves.values()), grad)
            return out
        return run

    return [
        Case("MultiScaleRoIAlign forward", work,
             lambda: theirs(feats, boxes, image_shapes), lambda: ours(feats, boxes, image_shapes),
             bytes=lambda out: nbytes(feats, boxes, out)),
        # Forward reads the features and writes the output; backward reads its gradient and
        # writes the features' gradients.
        Case("MultiScaleRoIAlign forward+backward", work, fwd_bwd(theirs, leaves_t), fwd_bwd(ours, leaves_f),
             bytes=lambda out: 2 * nbytes(feats, out)),
    ]


def random_boxes(shape, image_hw, seed, device, min_size=16.0, max_size=400.0):
    """Boxes anywhere in an image, log-uniform sizes: many overlaps, like proposals."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    size = torch.exp(torch.rand(*shape, 2, generator=g) * (math.log(max_size) - math.log(min_size)) + math.log(min_size))
    xy = torch.rand(*shape, 2, generator=g) * torch.tensor([w, h])
    scores = torch.rand(*shape, generator=g)
    return torch.cat([xy, xy + size], -1).to(device), scores.to(device)


@builds("nms", "batched_nms", "multi_image_nms")
def nms_cases(device):
    cases = []
    sizes = (1000, 10000, 20000, 100000) if device.type == "cuda" else (1000, 10000, 20000)
    for n in sizes:
        boxes, scores = random_boxes((n,), (800, 1216), n, device)
        cases.append(Case("nms", f"{n} boxes, IoU 0.5", lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.5),
                          lambda b=boxes, s=scores: nms(b, s, 0.5), kept_mismatch(scores)))
    n = 20000
    boxes, scores = random_boxes((n,), (800, 1216), 7, device)
    idxs = torch.randint(0, 80, (n,), generator=torch.Generator().manual_seed(8)).to(device)
    cases.append(Case("batched_nms", f"{n} boxes, 80 classes, IoU 0.5",
                      lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5),
                      lambda: batched_nms(boxes, scores, idxs, 0.5), kept_mismatch(scores)))

    def per_image_loop(b_, s_, i_, thr):
        return lambda: [torchvision.ops.batched_nms(b_[k], s_[k], i_[k], thr) for k in range(len(b_))]

    # RPN: 8 images x 5 FPN levels x 1000 boxes after top-k, NMS 0.7 per level.
    rpn_boxes, rpn_scores = random_boxes((8, 5000), (800, 1216), 9, device)
    rpn_levels = torch.arange(5, device=device).repeat_interleave(1000).expand(8, 5000).contiguous()
    cases.append(Case("multi_image_nms", "RPN: 8 images x 5 levels x 1000 boxes, IoU 0.7",
                      per_image_loop(rpn_boxes, rpn_scores, rpn_levels, 0.7),
                      lambda: multi_image_nms(rpn_boxes, rpn_scores, 0.7, idxs=rpn_levels), kept_mismatch(rpn_scores)))
    # Box head: 8 images x 1000 boxes x 80 classes, NMS 0.5 per class.
    head_boxes, head_scores = random_boxes((8, 80000), (800, 1216), 10, device)
    head_classes = torch.arange(80, device=device).repeat(1000).expand(8, 80000).contiguous()
    cases.append(Case("multi_image_nms", "box head: 8 images x 1000 boxes x 80 classes, IoU 0.5",
                      per_image_loop(head_boxes, head_scores, head_classes, 0.5),
                      lambda: multi_image_nms(head_boxes, head_scores, 0.5, idxs=head_classes, max_output=100),
                      kept_mismatch(head_scores, keep_first=100)))
    return cases


def proposals_mismatch(ref, ours) -> float:
    """Proposal comparison: the number of images whose proposals differ from torchvision's. Scores
    must be equal; boxes equal up to 1e-3 px (torch's vectorised exp and the C library's differ by
    an ulp now and then), compared by (score, box) since torchvision orders equal scores arbitrarily;
    boxes tied with the last kept score are left out when the output is full (which of them survive
    the cut is arbitrary in torchvision)."""
    ref_boxes, ref_scores = ref
    boxes, scores, counts = ours
    differ = 0
    for b in range(len(ref_boxes)):
        n = int(counts[b])
        if n != len(ref_boxes[b]):
            differ += 1
            continue
        mine, theirs = (boxes[b, :n].cpu(), scores[b, :n].cpu()), (ref_boxes[b].cpu(), ref_scores[b].cpu())
        if not torch.equal(mine[1], theirs[1].sort(descending=True)[0]):
            differ += 1
            continue
        if n == boxes.shape[1] and n:
            cut = mine[1][-1]
            mine, theirs = [(bx[sc > cut], sc[sc > cut]) for bx, sc in (mine, theirs)]
        rows = [torch.cat([sc[:, None].double(), bx.double()], 1) for bx, sc in (mine, theirs)]
        for i, r in enumerate(rows):
            for col in reversed(range(r.shape[1])):
                r = r[r[:, col].sort(stable=True)[1]]
            rows[i] = r
        differ += not torch.allclose(rows[0], rows[1], rtol=0, atol=1e-3)
    return float(differ)


@builds("AnchorGenerator", "BoxCoder.decode", "anchors + proposals")
def rpn_cases(device):
    """The RPN's post-processing at torchvision's defaults: FPN P2-P6, 3 anchors per location,
    per-level top-k, NMS 0.7. Images padded to 800 x 1216; random head outputs."""
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    shapes = [(800 // s, 1216 // s) for s in (4, 8, 16, 32)] + [(13, 19)]
    batches = (1, 8) if device.type == "cuda" else (2,)
    cases = []
    for batch in batches:
        g = torch.Generator().manual_seed(11 + batch)
        images = ImageList(torch.zeros(batch, 1, 800, 1216, device=device),
                           [(800 - 16 * (i % 3), 1216 - 100 * (i % 2)) for i in range(batch)])
        features = [torch.empty(batch, 1, h, w, device=device) for h, w in shapes]
        objectness = [(torch.randn(batch, 3, h, w, generator=g) * 3).to(device) for h, w in shapes]
        deltas = [(torch.randn(batch, 12, h, w, generator=g) * 0.5).to(device) for h, w in shapes]
        tv_gen, ours_gen = TVAnchorGenerator(sizes, ratios), AnchorGenerator(sizes, ratios)
        work = f"{batch} image(s) 800x1216, FPN P2-P6, 3 anchors/location"
        if batch == batches[0]:
            cases.append(Case("AnchorGenerator", work, lambda: torch.stack(tv_gen(images, features)),
                              lambda: torch.stack(ours_gen(images, features)), bytes=nbytes))
            anchors = torch.cat(tv_gen(images, features))
            codes = torch.cat([d.permute(0, 2, 3, 1).reshape(-1, 4) for d in deltas])
            cases.append(Case("BoxCoder.decode", f"{len(anchors)} anchors (all of {work})",
                              lambda: tv_det_utils.BoxCoder((1.0,) * 4).decode_single(codes, anchors),
                              lambda: BoxCoder((1.0,) * 4).decode_single(codes, anchors),
                              bytes=lambda out: nbytes(codes, anchors, out)))
        for mode, top_n in (("eval", 1000), ("train", 2000)):
            rpn = tv_rpn.RegionProposalNetwork(tv_gen, None, 0.7, 0.3, 256, 0.5, dict(training=top_n, testing=top_n),
                                               dict(training=top_n, testing=top_n), 0.7)
            rpn.eval()

            def torchvision_rpn(rpn=rpn, images=images, features=features, objectness=objectness, deltas=deltas):
                anchors = rpn.anchor_generator(images, features)
                obj, dl = tv_rpn.concat_box_prediction_layers(objectness, deltas)
                proposals = rpn.box_coder.decode(dl, anchors).view(len(anchors), -1, 4)
                return rpn.filter_proposals(proposals, obj, images.image_sizes, [o[0].numel() for o in objectness])

            def fastmask_rpn(top_n=top_n, images=images, features=features, objectness=objectness, deltas=deltas):
                ours_gen.set_cell_anchors(features[0].dtype, features[0].device)
                return generate_proposals(objectness, deltas, ours_gen.cell_anchors, images.image_sizes,
                                          images.tensors.shape[-2:], top_n, top_n, 0.7)

            cases.append(Case("anchors + proposals", f"{work}, {mode}: top {top_n} per level, NMS 0.7, top {top_n}",
                              torchvision_rpn, fastmask_rpn, proposals_mismatch))
    return cases


def image_list_diff(ref, ours) -> float:
    if ref.image_sizes != ours.image_sizes:
        return math.inf
    return max_abs_diff(ref.tensors, ours.tensors)


@builds("preprocess (GeneralizedRCNNTransform)", "paste_masks_in_image", "resize_bilinear")
def resize_cases(device):
    """Preprocessing (GeneralizedRCNNTransform, eval), pasting (100 masks, 1200 x 1200) and the
    plain bilinear resize, on the issue's workloads."""
    g = torch.Generator().manual_seed(11)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    two = [(480, 640), (600, 800)]
    batches = [("2 images 480x640, 600x800", two)]
    if device.type == "cuda":
        batches.append(("8 images 480x640 .. 600x800", two * 4))
    cases = []
    for label, sizes in batches:
        images = [torch.rand(3, h, w, generator=g).to(device) for h, w in sizes]
        decoded = [(im.permute(1, 2, 0) * 255).round().to(torch.uint8) for im in images]
        for name, kwargs, canvas in (("torchvision preset", {}, None),
                                     ("paper preset 800/1024, 1024x1024", {"size_divisible": 1024}, (1024, 1024))):
            max_size = 1024 if canvas else 1333
            theirs = TvTransform(800, max_size, mean, std, **kwargs).eval()
            ours = GeneralizedRCNNTransform(800, max_size, mean, std, canvas_size=canvas).eval()
            cases.append(Case("preprocess (GeneralizedRCNNTransform)", f"{label} float CHW, {name}",
                              lambda t=theirs, i=images: t(i)[0], lambda o=ours, i=images: o(i)[0], image_list_diff,
                              bytes=lambda out, i=images: nbytes(i, out.tensors)))
        theirs = TvTransform(800, 1333, mean, std).eval()
        ours = GeneralizedRCNNTransform(800, 1333, mean, std).eval()
        cases.append(Case("preprocess (GeneralizedRCNNTransform)", f"{label} uint8 HWC (torchvision: /255 first)",
                          lambda t=theirs, d=decoded: t([im.permute(2, 0, 1).float() / 255 for im in d])[0],
                          lambda o=ours, d=decoded: o(d)[0], image_list_diff,
                          bytes=lambda out, d=decoded: nbytes(d, out.tensors)))

    masks = torch.rand(100, 1, 28, 28, generator=g).to(device)
    xy = torch.rand(100, 2, generator=g) * 900
    boxes = torch.cat([xy, xy + 10 + torch.rand(100, 2, generator=g) * 290], 1).to(device)
    work = "100 masks 28x28 into 1200x1200"
    cases.append(Case("paste_masks_in_image", work, lambda: tv_paste_masks_in_image(masks, boxes, (1200, 1200)),
                      lambda: paste_masks_in_image(masks, boxes, (1200, 1200)),
                      bytes=lambda out: nbytes(masks, boxes, out)))
    cases.append(Case("paste_masks_in_image", work + ", thresholded > 0.5 (bool)",
                      lambda: tv_paste_masks_in_image(masks, boxes, (1200, 1200)) > 0.5,
                      lambda: paste_masks_in_image(masks, boxes, (1200, 1200), threshold=0.5),
                      bytes=lambda out: nbytes(masks, boxes, out)))

    x = torch.rand(2, 3, 480, 640, generator=g).to(device)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        name = "NCHW" if layout == torch.contiguous_format else "channels_last"
        cases.append(Case("resize_bilinear", f"2x3x480x640 {name} -> 800x1066",
                          lambda v=xl: torch.nn.functional.interpolate(v, size=(800, 1066), mode="bilinear",
                                                                       align_corners=False),
                          lambda v=xl: resize_bilinear(v, (800, 1066)), bytes=lambda out, v=xl: nbytes(v, out)))
    return cases


MODEL = "Mask R-CNN R50-FPN inference"
PRECISION_NAMES = {dtype: name for name, dtype in PRECISIONS.items()}  # torch.bfloat16 -> "bf16"


def fast_path_op(dtype: torch.dtype) -> str:
    return f"{MODEL} (fastmask fast path: optimize_for_inference, {PRECISION_NAMES[dtype]}, channels_last)"


FAST_PATH = fast_path_op(torch.bfloat16)
COMPILED = f"{MODEL} (fastmask compiled: optimize_for_inference, bf16, channels_last, compile=True)"
INT8 = f"{MODEL} (fastmask int8: optimize_for_inference, int8 backbone + FPN (PT2E), bf16 heads, compiled)"
EXPORTED = "Mask R-CNN R50-FPN exported (fastmask export_static: torch.export + AOTInductor package)"


def static_images(sizes, canvas_hw, device, seed):
    """Random uint8 images of ``sizes`` [(h, w)] at the top left of a zero canvas [B, 3, H, W] (as
    the caller of forward_static or of an exported package pads them), their sizes [B, 2], and the
    same images as float tensors in [0, 1] for torchvision's forward. The sizes are the network's
    input size (short side 800, long side <= 1333), which torchvision's transform keeps as they
    are, so both networks see the same pixels."""
    g = torch.Generator().manual_seed(seed)
    canvas = torch.zeros(len(sizes), 3, *canvas_hw, dtype=torch.uint8)
    for b, (h, w) in enumerate(sizes):
        canvas[b, :, :h, :w] = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    images = [(canvas[b, :, :h, :w].float() / 255).to(device) for b, (h, w) in enumerate(sizes)]
    return canvas.to(device), torch.tensor(sizes, device=device), images


@builds(MODEL, f"{MODEL} (fastmask channels_last)", FAST_PATH, fast_path_op(torch.float16), COMPILED, INT8, EXPORTED)
def model_cases(device, export=False):
    # End to end: torchvision's maskrcnn_resnet50_fpn against fastmask's, the same random weights,
    # eval mode. box_score_thresh=0 keeps every detection (random weights score ~1/91), so the box
    # NMS and the mask head do full work. `export`: also the exported package's rows (compiled on
    # first use; cached by exported_package).
    @functools.lru_cache(maxsize=None)
    def models():
        # Built on first use (the untimed reference call), not when --op leaves these rows out.
        reference, ours = (m.to(device) for m in model_pair(box_score_thresh=0.0))
        # channels_last convolutions are faster on the CPU but round differently: near-tied random
        # detections can then differ from torchvision's, so it is the user's choice, not the default.
        return reference, ours, copy.deepcopy(ours).to(memory_format=torch.channels_last)

    @functools.lru_cache(maxsize=None)
    def fast_model(dtype):
        # Networks in dtype, batch norms folded, channels_last; boxes, scores, NMS and pasting float32.
        return optimize_for_inference(models()[1], dtype, channels_last=True)

    @functools.lru_cache(maxsize=None)
    def compiled_model():
        # The networks compiled by Inductor (freezing: convolutions fused with ReLU and residual adds);
        # compiled by the case's untimed warm-up call.
        return optimize_for_inference(models()[1], torch.bfloat16, channels_last=True, compile=True)

    @functools.lru_cache(maxsize=None)
    def int8_model(calibration):
        # Backbone + FPN quantized (PT2E, X86 Inductor quantizer), calibrated on 8 random images of
        # the workload's sizes; needs torchao.
        return optimize_for_inference(models()[1], torch.int8, channels_last=True, calibration=list(calibration))

    @functools.lru_cache(maxsize=None)
    def static_model(dtype):
        # What an exported package runs (uint8 in, normalised inside, masks pasted), eagerly.
        return StaticMaskRCNN(models()[1] if dtype == torch.float32 else fast_model(dtype), paste=True).eval()

    @functools.lru_cache(maxsize=None)
    def package(dtype, batch, size):
        # float32: exported as loaded, as static_model(float32) runs; else export_static's precision
        # (batch norms folded, networks in dtype), as fast_model.
        precision = None if dtype == torch.float32 else PRECISION_NAMES[dtype]
        return torch._inductor.aoti_load_package(exported_package(models()[1], batch, size, precision, device))

    @functools.lru_cache(maxsize=None)
    def torchvision_channels_last():
        return copy.deepcopy(models()[0]).to(memory_format=torch.channels_last)

    g = torch.Generator().manual_seed(5)
    if device.type != "cuda":
        # 2 images 480x640 and 600x800 (resized to a short side of 800).
        images = [torch.rand(3, 480, 640, generator=g).to(device), torch.rand(3, 600, 800, generator=g).to(device)]
        work = "2 images 480x640 + 600x800, random weights, box_score_thresh=0"

        def torchvision_cpu():
            return models()[0](images)

        def torchvision_autocast_cpu():
            # torchvision's own fast path on the same layout and precision.
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torchvision_channels_last()(images)

        cases = [Case(MODEL, work, torchvision_cpu, lambda: models()[1](images), detections_differ),
                 Case(f"{MODEL} (fastmask channels_last)", work, torchvision_cpu,
                      lambda: models()[2](images), detections_differ),
                 Case(FAST_PATH, f"{work}, vs torchvision float32", torchvision_cpu,
                      lambda: fast_model(torch.bfloat16)(images), detections_differ),
                 Case(FAST_PATH, f"{work}, vs torchvision channels_last + bf16 autocast", torchvision_autocast_cpu,
                      lambda: fast_model(torch.bfloat16)(images), detections_differ)]
        calibration_g = torch.Generator().manual_seed(1)
        calibration = tuple(torch.rand(3, *hw, generator=calibration_g).to(device)
                            for hw in [(480, 640), (600, 800)] * 4)
        for op, run in ((COMPILED, lambda: compiled_model()(images)),
                        (INT8, lambda: int8_model(calibration)(images))):
            cases += [Case(op, f"{work}, vs torchvision float32", torchvision_cpu, run, detections_differ),
                      Case(op, f"{work}, vs torchvision channels_last + bf16 autocast", torchvision_autocast_cpu, run,
                           detections_differ)]

        # The same work at static shapes: what the transform makes of the images above (about
        # 800x1066, padded to 800x1088) as one uint8 canvas, for forward_static and the package.
        canvas, image_sizes, static_list = static_images([(800, 1066), (800, 1000)], (800, 1088), device, seed=6)
        static_work = ("2 images 800x1066 + 800x1000 (not resized) in a 2x3x800x1088 uint8 canvas, random weights, "
                       "box_score_thresh=0")

        def torchvision_static():
            return models()[0](static_list)

        def torchvision_static_autocast():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torchvision_channels_last()(static_list)

        for dtype, reference, versus in (
                (torch.float32, torchvision_static, "torchvision float32"),
                (torch.bfloat16, torchvision_static_autocast, "torchvision channels_last + bf16 autocast")):
            name = PRECISION_NAMES[dtype]
            eager = Case(MODEL if dtype == torch.float32 else fast_path_op(dtype),
                         f"{static_work}, fastmask forward_static + paste, eager, {name} (vs {versus})", reference,
                         lambda d=dtype: static_model(d)(canvas, image_sizes), static_detections_differ)
            cases.append(eager)
            if export:
                cases.append(Case(EXPORTED, f"{static_work}, package {name}{export_options(device)} (vs {versus})",
                                  reference, lambda d=dtype: package(d, 2, (800, 1088))(canvas, image_sizes),
                                  static_detections_differ, versus=eager))
        return cases

    cases = []
    for batch in (1, 8):
        # Images at the network's input size (800 x 1216: torchvision's transform keeps it), so
        # forward_static sees what forward sees after its transform.
        canvas, image_sizes, images = static_images([(800, 1216)] * batch, (800, 1216), device, seed=batch)
        stacked = torch.stack(images)
        work = f"{batch} image(s) 800x1216, random weights, box_score_thresh=0"

        def torchvision_eager(images=images):
            return models()[0](images)

        def torchvision_autocast(dtype, images=images):
            def run():
                with torch.autocast("cuda", dtype=dtype):
                    return models()[0](images)
            return run

        cases.append(Case(MODEL, f"{work}, eager", torchvision_eager,
                          lambda images=images: models()[1](images), detections_differ))
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            name = PRECISION_NAMES[dtype]
            if dtype == torch.float32:
                op, reference, versus = MODEL, torchvision_eager, "torchvision eager"
            else:
                op, reference = fast_path_op(dtype), torchvision_autocast(dtype)
                versus = f"torchvision eager, {name} autocast"
            graph = Case(op, f"{work}, fastmask forward_static + paste, CUDA graph, {name} (vs {versus})", reference,
                         static_inference(lambda d=dtype: models()[1] if d == torch.float32 else fast_model(d),
                                          stacked),
                         static_detections_differ)
            cases.append(graph)
            if export and batch == 8:
                # Compiling a package takes minutes: the larger batch only. Called as it is (the
                # package launches its kernels from C++), not captured in a CUDA graph.
                cases.append(Case(EXPORTED, f"{work}, package {name}{export_options(device)} (vs {versus})", reference,
                                  lambda d=dtype, c=canvas, s=image_sizes: package(d, len(c), (800, 1216))(c, s),
                                  static_detections_differ, versus=graph))
    return cases


def export_options(device: torch.device) -> str:
    """EXPORT_CONFIGS for ``device`` as workload text: "", or ", freezing=True"."""
    return "".join(f", {k}={v}" for k, v in EXPORT_CONFIGS.get(device.type, {}).items())


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fastmask_digest() -> str:
    """sha256 of the fastmask package's Python sources and compiled extension: what an exported
    package is traced from and calls."""
    root = os.path.dirname(os.path.abspath(fastmask.__file__))
    h = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith((".py", ".so"))):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def machine_key(device: torch.device) -> str:
    """What a package is compiled for: the GPU, or the CPU's instruction set (-march=native)."""
    if device.type == "cuda":
        return "%s sm_%d%d" % (torch.cuda.get_device_name(device), *torch.cuda.get_device_capability(device))
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    return f"{torch.backends.cpu.get_cpu_capability()} {hashlib.sha256(flags.encode()).hexdigest()[:12]}"


CACHE = os.path.join(HERE, ".cache")
# export_static's inductor_configs per device type. CPU: freezing (weights as constants: oneDNN
# prepacks the convolutions and fuses their activations and additions); see benchmarks/NOTES.md.
EXPORT_CONFIGS = {"cpu": {"freezing": True}}
COMPILE_SECONDS = {}  # package file name -> seconds its compilation took in this run (for the JSON)


def exported_package(model: torch.nn.Module, batch: int, size, precision: Optional[str], device: torch.device) -> str:
    """The path of ``export_static(model, batch, size, precision, paste=True)`` with
    EXPORT_CONFIGS for ``device``, compiled on first use and then kept under benchmarks/.cache/
    (gitignored), keyed by all it depends on: torch, torchvision, fastmask's sources and
    extension, the weights, the shapes, the precision, the options, the machine and the
    compiler's environment."""
    key = {"torch": torch.__version__, "torchvision": torchvision.__version__, "fastmask": fastmask_digest(),
           "weights": weights_digest(model), "batch": batch, "size": list(size), "precision": precision,
           "paste": True, "machine": machine_key(device), "inductor_configs": EXPORT_CONFIGS.get(device.type, {}),
           "environment": {k: v for k, v in os.environ.items() if k.startswith(("TORCHINDUCTOR_", "AOT_INDUCTOR_"))
                           or k == "ATEN_CPU_CAPABILITY"}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"maskrcnn_r50_fpn-{device.type}-{precision or 'as-loaded'}-{batch}x{size[0]}x{size[1]}-{digest}.pt2"
    path = os.path.join(CACHE, name)
    if os.path.exists(path):
        print(f"\nexported package: {path} (cached)", file=sys.stderr, flush=True)
        return path
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".gitignore"), "w") as f:
        f.write("*\n")
    print(f"\ncompiling {name} (torch.export + AOTInductor: minutes on a few cores; once, then cached "
          f"in {CACHE})", file=sys.stderr, flush=True)
    start = time.perf_counter()
    partial = path[: -len(".pt2")] + ".partial.pt2"  # AOTInductor wants the .pt2 suffix
    export_static(model, batch, size, precision, paste=True, path=partial,
                  inductor_configs=EXPORT_CONFIGS.get(device.type, {}))
    os.replace(partial, path)
    COMPILE_SECONDS[name] = time.perf_counter() - start
    print(f"compiled {name} in {COMPILE_SECONDS[name]:.0f} s", file=sys.stderr, flush=True)
    return path


def static_inference(model: Callable[[], torch.nn.Module], images: torch.Tensor) -> Callable[[], object]:
    """forward_static on ``images`` plus the pasting of every detection row into the image (fixed
    shapes: [B D, 1, H, W]), captured into a CUDA graph on the first call; later calls replay it.
    Returns (forward_static's outputs, pasted masks)."""
    replay = []

    def step():
        out = model().forward_static(images)
        rows = out["valid"].numel()
        masks = paste_masks_in_image(out["masks"].reshape(rows, 1, *out["masks"].shape[-2:]),
                                     out["boxes"].reshape(rows, 4), tuple(images.shape[-2:]))
        return out, masks

    def run():
        if not replay:
            replay.append(cuda_graph(step)[0])
        return replay[0]()

    return run


def static_detections_differ(reference, ours) -> float:
    """detections_differ on the valid rows of forward_static's outputs (compared in float32):
    ``ours`` is its dict (StaticMaskRCNN, an exported package) or (that dict, pasted masks)."""
    out = ours[0] if isinstance(ours, tuple) else ours
    valid = out["valid"]
    rows = [{key: out[key][b][valid[b]] for key in ("boxes", "scores", "labels")} for b in range(len(valid))]
    as_float = [[{k: v.float() if v.is_floating_point() else v for k, v in d.items()} for d in ds] for ds in (reference, rows)]
    return detections_differ(*as_float)


def all_cases(device: torch.device, op: str = "", export: Optional[bool] = None) -> List[Case]:
    """Every case (on CUDA more dtypes and sizes), or those whose op name contains `op`; the
    model's first (the headline rows: a time-boxed run keeps them). ``export``: the exported
    package's rows too (default: on the CPU; on CUDA their compilation costs minutes)."""
    def wanted(builder):
        return any(op.lower() in name.lower() for name in builder.ops)

    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    cases = []
    if wanted(model_cases):
        cases += model_cases(device, device.type == "cpu" if export is None else export)
    if wanted(roi_align_cases):
        for dtype in dtypes:
            cases += roi_align_cases(device, dtype, False) + roi_align_cases(device, dtype, True)
    if wanted(multiscale_cases):
        cases += multiscale_cases(device, torch.float32)
    for builder in (nms_cases, rpn_cases, resize_cases):
        if wanted(builder):
            cases += builder(device)
    return [c for c in cases if op.lower() in c.op.lower()]


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def plot(rows: List[Row], path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    labels = [f"{r.op}\n" + r.workload.replace(", ", "\n", 1) for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.8 * len(rows) + 1.8))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r.torchvision_ms for r in rows], 0.4, label="torchvision", color="#999999")
    ax.barh([y - 0.2 for y in ys], [r.fastmask_ms for r in rows], 0.4, label="fastmask", color="#1f77b4")
    for y, r in zip(ys, rows):
        ax.text(max(r.torchvision_ms, r.fastmask_ms) * 1.05, y, f"{r.speedup:.1f}x faster", va="center", fontsize=8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(max(r.torchvision_ms, r.fastmask_ms) for r in rows) * 3)
    ax.set_xlabel("median time (ms, log scale; shorter is faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: List[Row], bandwidth: bool) -> str:
    header = "| op | workload | torchvision ms | fastmask ms | speed-up | max abs diff |"
    rule = "|---|---|---:|---:|---:|---:|"
    if bandwidth:
        header += " fastmask GB/s (of copy) |"
        rule += "---:|"
    lines = [header, rule]
    for r in rows:
        line = (f"| {r.op} | {r.workload} | {r.torchvision_ms:.2f} | {r.fastmask_ms:.2f} | {r.speedup:.2f}x | "
                f"{r.max_abs_diff:.2e} |")
        if r.error:
            line = f"| {r.op} | {r.workload} | - | - | - | FAILED: {r.error} |"
        if bandwidth:
            line += f" {r.fastmask_gbs:.0f} ({r.copy_fraction:.0%}) |" if r.fastmask_gbs else " - |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def versus_table(rows: List[Row]) -> str:
    """fastmask against fastmask (Case.versus: the exported package against eager forward_static),
    the same inputs in the same run; empty if no row has one."""
    rows = [r for r in rows if r.versus_speedup]
    if not rows:
        return ""
    lines = ["", "fastmask against fastmask, same inputs, same run (e.g. the exported package against eager "
             "forward_static):", "", "| op | workload | fastmask ms | versus (op: workload) | its ms | speed-up |",
             "|---|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.op} | {r.workload} | {r.fastmask_ms:.2f} | {r.versus} | {r.versus_ms:.2f} | "
                     f"{r.versus_speedup:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--op", default="", help="only ops whose name contains this")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default: 5 CPU, 50 CUDA)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--case-budget-s", type=float, default=None,
                        help="stop timing a case once either side's runs pass this many seconds in all "
                             "(at least 3 rounds; the two sides run equally often)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for the table, raw numbers and plot")
    parser.add_argument("--export", action=argparse.BooleanOptionalAction, default=None,
                        help="the exported package's Mask R-CNN rows (default: on for the CPU, off for CUDA; "
                             "each package compiles for minutes the first time, then is cached in benchmarks/.cache/)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    repeats = args.repeats or (50 if device.type == "cuda" else 5)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    copy_gbs = copy_bandwidth_gbs(device) if device.type == "cuda" else None
    if copy_gbs:
        print(f"device-to-device copy: {copy_gbs:.0f} GB/s (bytes read + written)", flush=True)

    cases = all_cases(device, args.op, args.export)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x

    meta = {
        "device": device_name(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastmask_commit": git_commit(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "repeats": repeats,
        "warmup": warmup,
        "case_budget_s": args.case_budget_s,
        "copy_gbs": copy_gbs,
        "export_compile_s": COMPILE_SECONDS,  # packages compiled in this run (not those found cached)
    }
    title = f"{meta['device']} | torch {meta['torch']} | fastmask {meta['fastmask_commit']} | {meta['date']}"
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{device.type}-{datetime.date.today().isoformat()}")

    def write(rows):  # after every case, so a run cut short keeps what it measured
        with open(stem + ".md", "w") as f:
            f.write(f"# fastmask vs torchvision\n\n{title}\n\nMedian of {repeats} runs after {warmup} warm-up, "
                    "torchvision's and fastmask's runs alternating"
                    + (f" (at most {args.case_budget_s:g} s of runs per side)" if args.case_budget_s else "")
                    + ". For NMS and proposal rows the last column counts the images whose kept boxes differ from "
                    "torchvision's (as sets and score sequences: torchvision's per-class path orders ties "
                    "arbitrarily; proposal boxes to 1e-3 px); for the Mask R-CNN rows, the images whose "
                    "detections differ."
                    + (f" GB/s: the fewest bytes the op must move over fastmask's time, and its fraction of a "
                       f"device-to-device copy ({copy_gbs:.0f} GB/s here)." if copy_gbs else "")
                    + f"\n\n{table(rows, copy_gbs is not None)}{versus_table(rows)}")
        with open(stem + ".json", "w") as f:
            json.dump({"meta": meta, "rows": [asdict(r) for r in rows]}, f, indent=2)

    rows = []
    measured = {}  # id(case) -> its fastmask time, for Case.versus
    for case in tqdm(cases, desc="benchmarking", unit="case", file=sys.stderr):
        try:
            with torch.no_grad() if "backward" not in case.op else torch.enable_grad():
                ours = case.fastmask()
                diff = (case.compare or max_abs_diff)(case.torchvision(), ours)
                moved_bytes = case.bytes(ours) if copy_gbs and case.bytes is not None else None
                del ours  # not held while timing
                # Alternating runs: a drift in the machine's speed reaches both sides alike.
                t_tv, t_fm = time_interleaved_ms([case.torchvision, case.fastmask], device, repeats, warmup,
                                                 args.case_budget_s)
            row = Row(case.op, case.workload, t_tv, t_fm, t_tv / t_fm, diff)
            measured[id(case)] = t_fm
            if case.versus is not None and id(case.versus) in measured:
                row.versus = f"{case.versus.op}: {case.versus.workload}"
                row.versus_ms = measured[id(case.versus)]
                row.versus_speedup = row.versus_ms / t_fm
            if moved_bytes is not None:
                row.fastmask_gbs = moved_bytes / (t_fm * 1e-3) / 1e9
                row.copy_fraction = row.fastmask_gbs / copy_gbs
        except Exception as exc:  # noqa: BLE001 - reported in the table; the other cases still run
            row = Row(case.op, case.workload, math.nan, math.nan, math.nan, math.nan,
                      error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
            print(f"FAILED {case.op} | {case.workload}: {row.error}", file=sys.stderr, flush=True)
        rows.append(row)
        write(rows)

    print(f"\n{title}\n\n{table(rows, copy_gbs is not None)}{versus_table(rows)}")
    if any(not r.error for r in rows):
        plot([r for r in rows if not r.error], stem + ".png", title)
    print(f"wrote {stem}.md, .json, .png")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

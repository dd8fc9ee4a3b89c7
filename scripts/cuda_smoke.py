"""Every CUDA kernel of fastmask, launched once at small sizes: the program compute-sanitizer runs;
and, with --device cpu, every op once, forward and backward (CI runs it so under a torch that has
no torchvision release yet).

    python scripts/cuda_smoke.py                     # on the GPU (the CPU when there is none)
    python scripts/cuda_smoke.py --device cpu        # the same calls on the CPU kernels
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --kernel-name kns=fastmask \\
        --error-exitcode 97 python scripts/cuda_smoke.py

Each case makes fresh random inputs (boxes partly outside the maps and images, so the clipping
paths run too), calls the op, waits for the device and checks the output's shape and that it is
finite. On CUDA each result is also compared with the CPU kernel's on the same inputs (loosely:
the tests check exactness; this catches a kernel that wrote garbage without faulting). Prints one
line per case; exits 1 at the first failure, naming the case. The caching allocator should be
off under memcheck (as above) so an out-of-bounds access leaves its allocation.
"""
import argparse
import sys
from collections import OrderedDict
from typing import Callable, List, Tuple

import torch

import fastmask
from fastmask.ops import (AnchorGenerator, MultiScaleRoIAlign, batched_nms, decode_boxes, encode_boxes,
                          generate_proposals, grid_anchors, make_cell_anchors, multi_image_nms, nms,
                          paste_masks_in_image, preprocess_images, resize_bilinear, roi_align)


def boxes_around(n: int, height: float, width: float, g: torch.Generator) -> torch.Tensor:
    """[n, 4] boxes of random size, some partly outside a height x width image."""
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 1.2 - torch.tensor([width, height]) * 0.1
    wh = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 0.5 + 1
    return torch.cat([xy, xy + wh], 1)


def rois_for(batch: int, n: int, height: float, width: float, g: torch.Generator) -> torch.Tensor:
    index = torch.randint(0, batch, (n, 1), generator=g).float()
    return torch.cat([index, boxes_around(n, height, width, g)], 1)


def cases(g: torch.Generator) -> List[Tuple[str, Callable[[torch.device], object]]]:
    """(name, run on a device) pairs; each run builds its inputs on the CPU with `g`, then moves them."""
    out = []

    def case(name):
        def register(fn):
            out.append((name, fn))
            return fn
        return register

    # More RoIs per (level, image) bucket than the deterministic backward's block tests at once
    # (32 threads for these few channels), so its loop over chunks of RoIs runs more than once.
    x = torch.randn(2, 8, 16, 20, generator=g)
    rois = rois_for(2, 80, 64, 80, g)
    for layout, dtype in ((torch.contiguous_format, torch.float32), (torch.channels_last, torch.bfloat16)):
        for deterministic in (False, True):
            name = (f"roi_align fwd+bwd {'NCHW' if layout == torch.contiguous_format else 'channels_last'} "
                    f"{str(dtype)[6:]} ({'deterministic' if deterministic else 'atomic'} backward)")

            @case(name)
            def _(device, layout=layout, dtype=dtype, deterministic=deterministic):
                features = x.to(device, dtype).contiguous(memory_format=layout).requires_grad_()
                pooled = roi_align(features, rois.to(device), 3, 0.25, 2, True, deterministic=deterministic)
                (grad,) = torch.autograd.grad(pooled, features, torch.ones_like(pooled))
                return pooled, grad

    levels = OrderedDict((str(i), torch.randn(2, 4, 32 >> i, 40 >> i, generator=g)) for i in range(4))
    level_boxes = [boxes_around(70, 128, 160, g), boxes_around(45, 128, 160, g)]
    for deterministic in (False, True):
        @case(f"multi_level_roi_align fwd+bwd ({'deterministic' if deterministic else 'atomic'} backward)")
        def _(device, deterministic=deterministic):
            features = OrderedDict((k, v.to(device).requires_grad_()) for k, v in levels.items())
            pool = MultiScaleRoIAlign(list(features), 3, 2, deterministic=deterministic)
            pooled = pool(features, [b.to(device) for b in level_boxes], [(128, 160), (120, 150)])
            grads = torch.autograd.grad(pooled, list(features.values()), torch.ones_like(pooled))
            return (pooled,) + grads

    boxes, scores = boxes_around(300, 100, 120, g), torch.rand(300, generator=g)
    classes = torch.randint(0, 5, (300,), generator=g)

    @case("nms, batched_nms (float32, float16)")
    def _(device):
        return (nms(boxes.to(device), scores.to(device), 0.5),
                batched_nms(boxes.to(device), scores.to(device), classes.to(device), 0.5),
                nms(boxes.to(device, torch.float16), scores.to(device, torch.float16), 0.5))

    @case("multi_image_nms (ids, validity mask)")
    def _(device):
        valid = torch.arange(300) < 250
        return multi_image_nms(boxes.view(3, 100, 4).to(device), scores.view(3, 100).to(device), 0.6,
                               idxs=classes.view(3, 100).to(device), valid=valid.view(3, 100).to(device),
                               max_output=40)

    cells = [make_cell_anchors((s,), (0.5, 1.0, 2.0)) for s in (16, 32)]

    @case("grid_anchors")
    def _(device):
        return grid_anchors([c.to(device) for c in cells], [(5, 7), (3, 4)], [(8, 8), (16, 16)], num_images=2)

    codes = torch.randn(50, 8, generator=g)
    anchors = boxes_around(50, 64, 64, g)

    @case("decode_boxes, encode_boxes fwd+bwd")
    def _(device):
        rel_codes, reference = codes.to(device).requires_grad_(), anchors.to(device).requires_grad_()
        decoded = decode_boxes(rel_codes, reference, (10.0, 10.0, 5.0, 5.0))
        encoded = encode_boxes(reference, anchors.flip(0).to(device), (10.0, 10.0, 5.0, 5.0))
        grads = torch.autograd.grad((decoded.sum(), encoded.sum()), (rel_codes, reference))
        return (decoded, encoded) + grads

    shapes = [(16, 20), (8, 10), (4, 5)]
    objectness = [torch.randn(2, 3, h, w, generator=g) * 3 for h, w in shapes]
    deltas = [torch.randn(2, 12, h, w, generator=g) * 0.5 for h, w in shapes]
    for d in deltas:  # dw = dh = 0: no exp, so both devices decode the same bits and keep the same boxes
        d.view(2, 3, 4, *d.shape[-2:])[:, :, 2:] = 0
    rpn_cells = AnchorGenerator(((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3).cell_anchors

    @case("generate_proposals (top-k, candidates, multi-image NMS)")
    def _(device):
        sizes = torch.tensor([[60, 80], [64, 70]], device=device)
        return generate_proposals([o.to(device) for o in objectness], [d.to(device) for d in deltas],
                                  [c.to(device) for c in rpn_cells], sizes, (64, 80), 200, 100, 0.7)

    image = torch.rand(2, 3, 17, 23, generator=g)
    image_u8 = (torch.rand(2, 3, 9, 14, generator=g) * 255).to(torch.uint8)

    @case("resize_bilinear (float NCHW, channels_last, uint8)")
    def _(device):
        return (resize_bilinear(image.to(device), (30, 41)),
                resize_bilinear(image.to(device).contiguous(memory_format=torch.channels_last), (9, 12)),
                resize_bilinear(image_u8.to(device), (20, 7)))

    images = [torch.rand(3, 40, 56, generator=g), torch.rand(3, 50, 36, generator=g)]
    decoded = [(torch.rand(33, 47, 3, generator=g) * 255).to(torch.uint8)]

    @case("preprocess_images (float CHW, uint8 HWC)")
    def _(device):
        return (preprocess_images([im.to(device) for im in images], 64, 96)[0],
                preprocess_images([im.to(device) for im in decoded], 64, 96)[0])

    masks = torch.rand(9, 1, 14, 14, generator=g)
    mask_boxes = boxes_around(9, 50, 60, g)

    @case("paste_masks_in_image (float, thresholded bool)")
    def _(device):
        return (paste_masks_in_image(masks.to(device), mask_boxes.to(device), (50, 60)),
                paste_masks_in_image(masks.to(device), mask_boxes.to(device), (50, 60), threshold=0.5))

    return out


def flatten(result) -> List[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for r in result for t in flatten(r)]


def check(name: str, result, reference) -> None:
    ours, ref = flatten(result), flatten(reference) if reference is not None else None
    for i, t in enumerate(ours):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise AssertionError(f"{name}: output {i} has non-finite values")
        if ref is not None:
            r = ref[i]
            if t.shape != r.shape or t.dtype != r.dtype:
                raise AssertionError(f"{name}: output {i} is {t.dtype}{list(t.shape)} on {t.device}, "
                                     f"{r.dtype}{list(r.shape)} on the CPU")
            # Loose on purpose (bf16 rounding, atomic sums in another order): garbage is far off.
            # Integer and bool outputs (kept indices, counts, uint8 pixels, masks) are checked for
            # shape only: the tests compare them exactly.
            if t.is_floating_point() and not torch.allclose(t.cpu().double(), r.double(), rtol=0.02, atol=0.02):
                raise AssertionError(f"{name}: output {i} differs from the CPU kernel's by up to "
                                     f"{(t.cpu().double() - r.double()).abs().max().item():.3g}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    all_cases = cases(torch.Generator().manual_seed(args.seed))
    if args.list:
        print("\n".join(name for name, _ in all_cases))
        return 0
    print(f"fastmask {fastmask.__version__} from {fastmask.__file__}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    for name, run in all_cases:
        try:
            result = run(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # a fault surfaces here, attributed to this case
            check(name, result, run(torch.device("cpu")) if device.type == "cuda" else None)
        except Exception as exc:  # noqa: BLE001 - reported with the case's name
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            return 1
        print(f"ok   {name}", flush=True)
    print(f"all {len(all_cases)} cases ran on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

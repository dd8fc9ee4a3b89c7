"""The ``fastmask`` command: train, evaluate, predict, bench, export. ``fastmask <command> --help`` for options."""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional


def _data_args(parser: argparse.ArgumentParser, num_images: int, seed: int) -> None:
    g = parser.add_argument_group("data (synthetic shapes unless --coco-annotations is given)")
    g.add_argument("--coco-annotations", metavar="JSON", help="a COCO-format annotation file")
    g.add_argument("--coco-images", metavar="DIR", help="the folder of its images")
    g.add_argument("--num-images", type=int, default=num_images, help="synthetic images (default %(default)s)")
    g.add_argument("--image-size", type=int, default=128, help="synthetic image side (default %(default)s)")
    g.add_argument("--data-seed", type=int, default=seed, help="synthetic data seed (default %(default)s)")


def _dataset(args: argparse.Namespace):
    from .data import CocoDetection, SyntheticShapes

    if args.coco_annotations:
        if not args.coco_images:
            raise SystemExit("fastmask: --coco-annotations needs --coco-images (the folder of its images)")
        return CocoDetection(args.coco_images, args.coco_annotations)
    return SyntheticShapes(args.num_images, args.image_size, seed=args.data_seed)


def _model_kwargs(pairs: List[str]) -> Dict[str, Any]:
    """--model-arg KEY=VALUE pairs, VALUE parsed as JSON when it is JSON (else a string)."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"fastmask: --model-arg expects KEY=VALUE, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def _checkpoint_args(parser: argparse.ArgumentParser, package: bool = False) -> None:
    source = parser.add_mutually_exclusive_group(required=True) if package else parser
    source.add_argument("--checkpoint", required=not package,
                        help="a fastmask checkpoint, or a torchvision Mask R-CNN state_dict (.pth)")
    if package:
        source.add_argument("--package", metavar="PT2",
                            help="instead of --checkpoint: a package from 'fastmask export' (runs on the device it "
                            "was exported for; images resized and quantised to uint8 as the package needs)")
    parser.add_argument("--arch", default=None, help="for a torchvision state_dict: its ResNet (default resnet50)")
    if package:
        parser.add_argument("--device", default=None, help="default: cpu; a --package's own device")
    else:
        parser.add_argument("--device", default="cpu")


_PRECISIONS = ("bf16", "fp16", "fp32")  # fastmask.models.inference.PRECISIONS' names (torch not imported to parse)
_CALIBRATION_IMAGES = 32  # --precision int8's default


def _inference_args(parser: argparse.ArgumentParser, calibration: str) -> None:
    g = parser.add_argument_group("fast inference (fastmask.models.optimize_for_inference; any of these flags applies "
                                  "it, which also folds the batch norms into the convolutions)")
    g.add_argument("--precision", choices=_PRECISIONS + ("int8",), default=None,
                   help="the networks' precision; int8: the backbone and FPN quantized (needs torchao; compiled), "
                   "the heads in bf16; boxes, scores, NMS and masks stay float32 (default: the model as loaded, "
                   "float32, not optimised)")
    g.add_argument("--channels-last", action="store_true", help="channels_last convolutions")
    g.add_argument("--compile", action="store_true",
                   help="the networks compiled by Inductor with freezing (convolutions fused with their ReLU and "
                   "residual addition; needs a C++ compiler; the first call compiles: R50-FPN 10-35 s on 2 cores)")
    g.add_argument("--calibration-images", type=int, default=None, metavar="N",
                   help=f"--precision int8: calibrate on N {calibration} (default {_CALIBRATION_IMAGES})")


def _optimized(model, args: argparse.Namespace, calibration):
    """``model`` through optimize_for_inference (in place) if --precision, --channels-last or
    --compile asks. ``calibration(n)``: int8's n calibration images."""
    if args.calibration_images is not None and args.precision != "int8":
        raise SystemExit("fastmask: --calibration-images is for --precision int8")
    if args.precision is None and not args.channels_last and not args.compile:
        return model
    import torch

    from .models import optimize_for_inference
    from .models.inference import PRECISIONS

    if args.precision != "int8":
        return optimize_for_inference(model, dtype=PRECISIONS[args.precision or "fp32"],
                                      channels_last=args.channels_last, inplace=True, compile=args.compile)
    count = _CALIBRATION_IMAGES if args.calibration_images is None else args.calibration_images
    if count < 1:
        raise SystemExit(f"fastmask: --calibration-images must be at least 1, got {count}")
    images = [image.to(args.device) for image in calibration(count)]
    return optimize_for_inference(model, dtype=torch.int8, channels_last=args.channels_last, inplace=True,
                                  compile=True, calibration=images)


def _calibration_images(args: argparse.Namespace):
    """int8's calibration images for predict and evaluate: the first n of predict's image files or
    of --coco-annotations' data set, else synthetic shapes as 'fastmask train' draws its training
    images (seed 0; evaluate's held-out images are seed 1)."""
    from .data import SyntheticShapes

    def images(n: int):
        if getattr(args, "images", None):
            return [_read_image(path) for path in args.images[:n]]
        if getattr(args, "coco_annotations", None):
            data = _dataset(args)
        else:
            data = SyntheticShapes(n, args.image_size, seed=0)
        return [data[i][0] for i in range(min(n, len(data)))]

    return images


def _same_device(a, b) -> bool:
    """Whether torch devices ``a`` and ``b`` may be the same one: "cuda" matches "cuda:0"."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _load(args: argparse.Namespace):
    """The model and its config: the checkpoint's, or ``--package``'s ``PackagedMaskRCNN`` (a
    config of its ``num_classes``)."""
    if getattr(args, "package", None):
        given = [flag for flag, value in (("--arch", args.arch), ("--precision", args.precision),
                                          ("--channels-last", args.channels_last), ("--compile", args.compile),
                                          ("--calibration-images", args.calibration_images)) if value]
        if given:
            raise SystemExit(f"fastmask: {', '.join(given)}: for --checkpoint only; a --package runs as it was "
                             "exported (fastmask export --precision ...)")
        import torch

        from .models import export

        model = export.load_package(args.package)
        if args.device is not None and not _same_device(torch.device(args.device), model.device):
            raise SystemExit(f"fastmask: the package runs on {model.device} (the device it was exported for), "
                             f"not --device {args.device}")
        args.device = str(model.device)
        return model, {"num_classes": int(model.metadata["num_classes"])}
    from .engine import load_checkpoint

    args.device = args.device or "cpu"
    model, config, _ = load_checkpoint(args.checkpoint, {"arch": args.arch} if args.arch else None)
    return _optimized(model.to(args.device).eval(), args, _calibration_images(args)), config


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import TrainConfig, evaluate, train

    dataset = _dataset(args)
    # Given sizes, else the synthetic images' own size; the paper preset and COCO data keep the
    # architecture's (800/1024 for the paper).
    sizes = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    if not sizes and args.arch != "paper" and not args.coco_annotations:
        sizes = {"min_size": args.image_size, "max_size": args.image_size}
    kwargs = {**sizes, **_model_kwargs(args.model_arg)}
    config = TrainConfig(
        arch=args.arch, num_classes=len(dataset.classes), model_kwargs=kwargs, iterations=args.iterations,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, amp=args.amp, seed=args.seed,
        device=args.device, workers=args.workers, out_dir=args.out, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, progress=not args.no_progress, classes=list(dataset.classes),
    )
    model = train(config, dataset, resume=not args.no_resume)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    if args.eval_images and int(os.environ.get("RANK", "0")) == 0:
        from .data import SyntheticShapes

        held_out = SyntheticShapes(args.eval_images, args.image_size, seed=args.data_seed + 1)
        metrics = evaluate(model, held_out, device=args.device)
        print(json.dumps(metrics))
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine import evaluate

    model, _ = _load(args)
    metrics = evaluate(model, _dataset(args), batch_size=args.batch_size, device=args.device, verbose=args.verbose)
    print(json.dumps(metrics))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def _read_image(path: str):
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from .engine import draw_detections

    model, config = _load(args)
    classes = config.get("classes") or [str(i) for i in range(config["num_classes"])]
    if args.images:
        named = [(os.path.splitext(os.path.basename(p))[0], _read_image(p)) for p in args.images]
    else:
        from .data import SyntheticShapes

        shapes = SyntheticShapes(args.num_images, args.image_size, seed=args.data_seed)
        named = [(f"shapes-{i:04d}", shapes[i][0]) for i in range(len(shapes))]
    os.makedirs(args.out, exist_ok=True)
    for start in range(0, len(named), args.batch_size):
        chunk = named[start:start + args.batch_size]
        with torch.no_grad():
            outputs = model([image.to(args.device) for _, image in chunk])
        for (name, image), output in zip(chunk, outputs):
            path = os.path.join(args.out, f"{name}.png")
            draw_detections(image, output, classes, args.score_threshold).save(path)
            print(f"{path}: {int((output['scores'] >= args.score_threshold).sum())} detections")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import time

    import torch

    from .engine.bench import detections_differ, model_pair, time_interleaved_ms

    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    reference, ours = (m.to(device) for m in model_pair(box_score_thresh=args.box_score_thresh))

    def calibration(n: int):  # random images of the benchmark's sizes (the weights are random too)
        g = torch.Generator().manual_seed(1)
        return [torch.rand(3, *sizes[i % len(sizes)], generator=g) for i in range(n)]

    start = time.perf_counter()
    ours = _optimized(ours, args, calibration)
    prepared_s = time.perf_counter() - start
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g).to(device) for h, w in sizes] * args.batch
    with torch.no_grad():
        start = time.perf_counter()
        first = ours(images)  # compiles, with --compile or int8
        first_s = time.perf_counter() - start
        differ = detections_differ(reference(images), first)
        # Alternating runs: a drift in the machine's speed slows both sides alike.
        t_ref, t_ours = time_interleaved_ms([lambda: reference(images), lambda: ours(images)], device, args.repeats,
                                            args.warmup)
    optimized = ""
    if args.precision or args.channels_last or args.compile:
        precision = args.precision or "fp32"
        if precision == "int8":
            precision = "int8 backbone and FPN, bf16 heads"
        layout = ", channels_last" if args.channels_last else ""
        compiled = ", compiled" if args.compile or args.precision == "int8" else ""
        optimized = f" (fastmask: {precision}{layout}, batch norms folded{compiled})"
    print(f"Mask R-CNN R50-FPN inference{optimized}, {len(images)} images {' '.join(args.sizes)} on {device} "
          f"({torch.get_num_threads()} threads), median of {args.repeats} runs each, the two alternating:")
    print(f"  torchvision {t_ref:.1f} ms   fastmask {t_ours:.1f} ms   speed-up {t_ref / t_ours:.2f}x   "
          f"images whose detections differ: {differ:.0f}")
    if args.compile or args.precision == "int8":
        print(f"  optimize_for_inference {prepared_s:.1f} s (int8: export and calibration), first call "
              f"{first_s:.1f} s (compiles)")
    print("The per-op kernel comparison is benchmarks/compare.py in fastmask's source tree.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .engine import load_checkpoint
    from .models.export import export_static

    model, _, _ = load_checkpoint(args.checkpoint, {"arch": args.arch} if args.arch else None)
    # Default: the square that holds any image the model's transform resizes (long side <= max_size).
    size = args.size or [-(-model.transform.max_size // 32) * 32] * 2
    path = export_static(model.to(args.device).eval(), args.batch, size, args.precision, args.paste, args.out,
                         inductor_configs={"freezing": True} if args.freeze else None)
    print(f"{path}: {args.batch} x 3 x {size[0]} x {size[1]} uint8 images and [{args.batch}, 2] int64 "
          f"image sizes -> boxes, scores, labels, masks{' (pasted)' if args.paste else ''}, valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastmask", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastmask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train Mask R-CNN (synthetic shapes or COCO-format data); torchrun for DDP",
                       description="Train Mask R-CNN from scratch. Writes OUT/checkpoint.pth, OUT/log.jsonl "
                       "(losses) and OUT/config.json, and resumes from OUT/checkpoint.pth when it exists. "
                       "Under torchrun (--nproc_per_node N) every process trains with DDP.")
    _data_args(p, num_images=512, seed=0)
    p.add_argument("--arch", default="resnet50", help="resnet18/34/50/101 (torchvision's recipe) or paper "
                   "(the paper's ResNet-101 preset); default %(default)s")
    p.add_argument("--min-size", type=int, default=None,
                   help="resize: short side (default: the synthetic image size; paper/COCO: the model's)")
    p.add_argument("--max-size", type=int, default=None,
                   help="resize: long side at most (default: as --min-size)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any MaskRCNN keyword argument, e.g. box_batch_size_per_image=128 (repeatable)")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=4, help="images per process and step")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=100, help="warm-up iterations")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--out", default="runs/train", help="output folder (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoint.pth exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--eval-images", type=int, default=0,
                   help="after training, COCO AP on this many held-out synthetic images (OUT/eval.json)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="COCO box and mask AP (pycocotools)")
    _checkpoint_args(p, package=True)
    _data_args(p, num_images=64, seed=1)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--json", help="also write the metrics here")
    p.add_argument("--verbose", action="store_true", help="print pycocotools' tables")
    _inference_args(p, "training images (synthetic shapes of seed 0), or the first N of --coco-annotations' images")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="write PNG overlays of predicted masks and boxes")
    _checkpoint_args(p, package=True)
    p.add_argument("images", nargs="*", help="image files (default: synthetic shapes)")
    p.add_argument("--out", default="predictions", help="output folder (default %(default)s)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--num-images", type=int, default=4, help="synthetic images when no files are given")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--data-seed", type=int, default=1)
    _inference_args(p, "of the image files given, or training images (synthetic shapes of seed 0)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="end-to-end inference latency against torchvision's model (same weights)")
    p.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    p.add_argument("--sizes", nargs="+", default=["480x640", "600x800"], metavar="HxW", help="one image per size")
    p.add_argument("--batch", type=int, default=1, help="repeat the sizes this many times")
    p.add_argument("--box-score-thresh", type=float, default=0.0,
                   help="0 keeps every detection of the random weights (default %(default)s)")
    _inference_args(p, "random images of --sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="one ahead-of-time compiled package (.pt2) of forward_static, for Python or C++",
                       description="torch.export of the model's forward_static at a fixed batch and image size, "
                       "normalising uint8 images inside, compiled by AOTInductor into one .pt2 package. Load it with "
                       "'import fastmask' and torch._inductor.aoti_load_package(OUT) (C++: libfastmask_ops and "
                       "torch::inductor::AOTIModelPackageLoader); call it with (images [B, 3, H, W] uint8, "
                       "image_sizes [B, 2] int64: each image's size before zero padding). It checks its inputs only "
                       "with AOTI_RUNTIME_CHECK_INPUTS=1 in the environment. Needs a C++ compiler.")
    _checkpoint_args(p)
    p.add_argument("--out", default="model.pt2", help="the package to write (default %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default %(default)s)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="the network's input size, multiples of 32 (default: a square of the model's max_size, "
                   "rounded up to a multiple of 32)")
    p.add_argument("--precision", choices=_PRECISIONS, default=None,
                   help="run the networks in this precision (optimize_for_inference: batch norms folded; boxes, "
                   "scores, NMS and masks stay float32); default: the model as loaded")
    p.add_argument("--paste", action="store_true",
                   help="masks pasted into the image ([B, D, H, W] probabilities) instead of [B, D, 28, 28]")
    p.add_argument("--freeze", action="store_true",
                   help="Inductor freezing: the weights become constants, so on the CPU the convolutions' weights are "
                   "prepacked for oneDNN (faster; see the README)")
    p.set_defaults(func=cmd_export)
    return parser


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Mask R-CNN's ``forward_static`` as one ahead-of-time compiled package (``torch.export`` +
AOTInductor): runs with ``import fastmask`` (which registers the ops) and
``torch._inductor.aoti_load_package``, without fastmask's or torchvision's model code."""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from .. import __version__
from ..ops import boxes_to_original, resize_bilinear
from ..ops.preprocess import resized_image_size
from .inference import PRECISIONS, optimize_for_inference
from .mask_rcnn import MaskRCNN
from ._components import paste_masks_in_image

__all__ = ["StaticMaskRCNN", "export_program", "export_static", "package_metadata", "PackagedMaskRCNN", "load_package"]

class StaticMaskRCNN(nn.Module):
    """The module that is exported: ``forward_static`` of ``model`` on uint8 images.

    ``forward(images, image_sizes)``: ``images`` ``[B, 3, H, W]`` uint8 (0-255, RGB, resized and
    zero-padded to the network's size by the caller), ``image_sizes`` ``[B, 2]`` int64 (h, w) of
    each image before padding. Returns ``forward_static``'s dict (``boxes``, ``scores``,
    ``labels``, ``masks``, ``valid``); with ``paste``, ``masks`` are ``[B, D, H, W]`` float mask
    probabilities pasted into the image (``paste_masks_in_image``) instead of ``[B, D, 28, 28]``.
    """

    def __init__(self, model: MaskRCNN, paste: bool = False):
        super().__init__()
        self.model = model
        self.paste = paste

    def forward(self, images: Tensor, image_sizes: Tensor) -> Dict[str, Tensor]:
        out = self.model.forward_static(images.to(torch.float32) / 255, image_sizes)
        if self.paste:
            boxes, masks = out["boxes"], out["masks"]
            num_images, detections, height, width = boxes.shape[0], boxes.shape[1], images.shape[2], images.shape[3]
            pasted = paste_masks_in_image(masks.reshape(-1, 1, masks.shape[2], masks.shape[3]),
                                          boxes.reshape(-1, 4), (height, width))
            out["masks"] = pasted.view(num_images, detections, height, width)
        return out


def _check(model: nn.Module, batch: int, size: Sequence[int], precision: Optional[str]) -> None:
    if not isinstance(model, MaskRCNN):
        kind = ("a torchvision model: load its state_dict into fastmask's (e.g. fastmask.models."
                "maskrcnn_resnet50_fpn), which has forward_static" if isinstance(model, GeneralizedRCNN)
                else type(model).__name__)
        raise TypeError(f"model must be a fastmask MaskRCNN (it has forward_static), got {kind}")
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if len(size) != 2 or any(int(s) <= 0 or int(s) % 32 for s in size):
        raise ValueError(f"size must be (height, width), positive multiples of 32 (the FPN's stride), "
                         f"got {tuple(size)}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)} or None, got {precision!r}")


def export_program(model: MaskRCNN, batch: int, size: Sequence[int], precision: Optional[str] = None,
                   paste: bool = False) -> torch.export.ExportedProgram:
    """``torch.export`` of ``StaticMaskRCNN(model, paste)`` for ``batch`` uint8 images of ``size``
    (height, width) on ``model``'s device. ``precision`` ("fp32", "bf16", "fp16") runs the model
    through ``optimize_for_inference`` (on a copy; batch norms folded) first; ``None`` exports it
    as it is. ``model`` is not modified."""
    _check(model, batch, size, precision)
    model = copy.deepcopy(model).eval()
    if precision is not None:
        model = optimize_for_inference(model, dtype=PRECISIONS[precision], channels_last=False, inplace=True)
    device = next(model.parameters()).device
    height, width = int(size[0]), int(size[1])
    images = torch.zeros(int(batch), 3, height, width, dtype=torch.uint8, device=device)
    image_sizes = torch.tensor([[height, width]] * int(batch), device=device)
    with torch.no_grad():
        return torch.export.export(StaticMaskRCNN(model, paste).eval(), (images, image_sizes))


def package_metadata(model: MaskRCNN, batch: int, size: Sequence[int], precision: Optional[str] = None,
                     paste: bool = False) -> Dict[str, str]:
    """The metadata ``export_static`` writes into the package (all strings): its inputs and
    outputs, and what ``PackagedMaskRCNN`` needs to resize images as ``model``'s transform does."""
    _check(model, batch, size, precision)
    batch, height, width = int(batch), int(size[0]), int(size[1])
    transform, fixed = model.transform, model.transform.fixed_size
    return {"fastmask_version": __version__, "images": f"uint8[{batch}, 3, {height}, {width}]",
            "image_sizes": f"int64[{batch}, 2]", "outputs": "boxes,scores,labels,masks,valid",
            "precision": precision or "as loaded", "paste": str(bool(paste)),
            "batch": str(batch), "height": str(height), "width": str(width),
            "min_size": str(int(transform.min_size[-1])), "max_size": str(int(transform.max_size)),
            "fixed_size": "" if fixed is None else f"{int(fixed[0])},{int(fixed[1])}",
            "num_classes": str(int(model.roi_heads.box_predictor.cls_score.out_features)),
            "device": str(next(model.parameters()).device)}


def export_static(model: MaskRCNN, batch: int, size: Sequence[int], precision: Optional[str] = None,
                  paste: bool = False, path: str = "model.pt2",
                  inductor_configs: Optional[Dict[str, Any]] = None) -> str:
    """``export_program`` compiled by AOTInductor into the package ``path`` (a ``.pt2`` file) for
    ``model``'s device; returns ``path``. Needs a C++ compiler (and nvcc for CUDA).

    Load it with ``import fastmask`` (or, without Python fastmask, ``libfastmask_ops``: only the
    ops are needed) and ``torch._inductor.aoti_load_package(path)``; calling the result with
    ``(images, image_sizes)`` as ``StaticMaskRCNN`` returns the same dict (C++:
    ``torch::inductor::AOTIModelPackageLoader(path).run({images, image_sizes})`` returns the
    tensors in the order of the package's ``outputs`` metadata). The package does not check its
    inputs unless the environment sets ``AOTI_RUNTIME_CHECK_INPUTS=1``: other shapes or dtypes
    than it was exported for are undefined behaviour. Its metadata (``get_metadata()``) records
    them.

    The outputs equal the eager ``StaticMaskRCNN``'s within float32 rounding, not bit for bit:
    Inductor fuses and reorders the networks' arithmetic. Measured on the test model (ResNet-18,
    128 x 128, random weights, 5 inputs, AVX-512 and ATen's default kernels): boxes within 3e-4
    pixels, scores within 2e-6, 28 x 28 and pasted masks within 2e-4, labels and valid equal.
    With ``precision="bf16"`` the masks differed by up to 0.04 (bf16 rounding in the mask head).

    ``inductor_configs``: more Inductor options for the compilation (``torch._inductor.config``
    names), e.g. ``{"freezing": True}``: the weights become constants, so on the CPU Inductor
    prepacks the convolutions' weights for oneDNN and fuses their activations and additions
    (it compiles under ``torch.no_grad()``, which freezing needs)."""
    program = export_program(model, batch, size, precision, paste)
    metadata = package_metadata(model, batch, size, precision, paste)
    with torch.no_grad():
        configs = dict(inductor_configs or {})
        # The caller's metadata entries are kept beside fastmask's (which PackagedMaskRCNN reads).
        configs["aot_inductor.metadata"] = {**configs.get("aot_inductor.metadata", {}), **metadata,
                                            "freezing": str(bool(configs.get("freezing", False)))}
        return torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=configs)


def _quantize(image: Tensor) -> Tensor:
    """``[3, h, w]`` floats in [0, 1] to uint8: ``round(x * 255)`` (ties to even), clamped. Exact
    (``k / 255`` back to ``k``) for images that hold multiples of 1/255, as decoded 8-bit images do;
    other values move by at most 0.5 / 255."""
    return (image * 255).round_().clamp_(0, 255).to(torch.uint8)


class PackagedMaskRCNN:
    """An exported package (``export_static``) called like ``MaskRCNN.forward`` in eval mode.

    ``model(images)``: ``images`` a list of ``[3, h, w]`` floating tensors in [0, 1] (any sizes);
    returns one dict per image, as the eager model: ``boxes [N, 4]`` in the image's coordinates,
    ``scores [N]``, ``labels [N]``, ``masks [N, 1, h, w]`` probabilities pasted into the image
    (only the package's ``valid`` rows). Each image is resized as the model's transform would (its
    scale rule from the package's ``min_size``/``max_size``/``fixed_size``, bilinear with
    ``fastmask.ops.resize_bilinear`` as the transform's resize), then quantised to uint8 (the
    package's input; ``round(x * 255)``, exact for images of multiples of 1/255) and zero-padded
    into the package's canvas, ``batch`` images per call (the last call padded with blank images
    whose outputs are dropped). Boxes are scaled back and masks pasted into the original size with
    fastmask's ops (``boxes_to_original``, ``paste_masks_in_image``), as the transform's
    postprocess does. Uses no model code (fastmask's or torchvision's), only these ops.

    Outputs equal the eager model's for images that need no resizing and hold multiples of 1/255
    (up to the compiled package's float32 rounding) when the eager batch is padded to the same
    canvas (a batch holding an image as large as the canvas, or a transform whose ``canvas_size``
    is the package's size): the package always runs on its whole canvas, and the features of the
    padding reach into the image through the convolutions and its anchors compete in the top-k,
    so detections depend on the padding (in the eager model, on the batch's largest image; here,
    on nothing but the image). With resizing, the transform resizes the normalised float image
    while this resizes, then quantises, the [0, 1] image (up to 0.5 / 255 per pixel apart). A
    package exported with ``paste=True`` holds masks pasted into the canvas: they are cropped for
    images that need no resizing, and an image that does is a ``ValueError``.

    ``runner``: ``(images, image_sizes) -> dict``, e.g. ``torch._inductor.aoti_load_package(path)``
    or ``export_program(...).module()``; ``metadata``: ``package_metadata``'s dict.
    """

    training = False

    def __init__(self, runner, metadata: Dict[str, str]):
        needed = ("batch", "height", "width", "min_size", "max_size", "fixed_size", "paste", "device", "num_classes")
        missing = [k for k in needed if k not in metadata]
        if missing:
            raise ValueError(f"the package's metadata lacks {missing} (needed to preprocess images): export it "
                             "again with this fastmask's export_static / fastmask export")
        self.runner = runner
        self.metadata = dict(metadata)
        self.batch = int(metadata["batch"])
        self.canvas = (int(metadata["height"]), int(metadata["width"]))
        self.min_size, self.max_size = int(metadata["min_size"]), int(metadata["max_size"])
        self.fixed_size = tuple(int(v) for v in metadata["fixed_size"].split(",")) if metadata["fixed_size"] else None
        self.paste = metadata["paste"] == "True"
        self.device = torch.device(metadata["device"])

    def eval(self) -> "PackagedMaskRCNN":
        return self

    def train(self, mode: bool = True) -> "PackagedMaskRCNN":
        if mode:
            raise RuntimeError("an exported package is for inference only: it cannot be put in training mode")
        return self

    def _sizes(self, images: Sequence[Tensor]) -> List[Tuple[Tuple[int, int], Tuple[int, int]]]:
        """(original, resized) size of each image, checked against the canvas."""
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise TypeError(f"images must be a non-empty list of [3, H, W] tensors, got {type(images).__name__}")
        sizes = []
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(f"images[{i}] must be a [3, H, W] tensor, got {shape}")
            if not image.is_floating_point():
                raise TypeError(f"images[{i}] must be floating (in [0, 1]), got {image.dtype}")
            if image.shape[1] == 0 or image.shape[2] == 0:
                raise ValueError(f"images[{i}] is empty, shape {tuple(image.shape)}")
            original = (int(image.shape[1]), int(image.shape[2]))
            resized = resized_image_size(*original, self.min_size, self.max_size, self.fixed_size)
            if resized[0] > self.canvas[0] or resized[1] > self.canvas[1]:
                raise ValueError(f"images[{i}] of size {original} is resized to {resized}, which does not fit the "
                                 f"package's {self.canvas} canvas: export it with a larger --size")
            if self.paste and resized != original:
                raise ValueError(f"images[{i}] of size {original} needs resizing to {resized}, but the package was "
                                 "exported with paste=True (masks pasted into the resized image, not the original): "
                                 "export it without --paste")
            sizes.append((original, resized))
        return sizes

    @torch.no_grad()
    def __call__(self, images: Sequence[Tensor]) -> List[Dict[str, Tensor]]:
        sizes = self._sizes(images)
        results: List[Dict[str, Tensor]] = []
        for start in range(0, len(images), self.batch):
            chunk = range(start, min(start + self.batch, len(images)))
            canvas = torch.zeros(self.batch, 3, *self.canvas, dtype=torch.uint8, device=self.device)
            for slot, i in enumerate(chunk):
                original, (h, w) = sizes[i]
                image = images[i].to(self.device, torch.float32)
                if (h, w) != original:
                    image = resize_bilinear(image[None], (h, w))[0]
                canvas[slot, :, :h, :w] = _quantize(image)
            # Blank canvas-sized images fill a last partial batch; their outputs are dropped.
            resized = [sizes[i][1] for i in chunk] + [self.canvas] * (self.batch - len(chunk))
            out = self.runner(canvas, torch.tensor(resized, dtype=torch.int64, device=self.device))
            for slot, i in enumerate(chunk):
                original, resized = sizes[i]
                keep = out["valid"][slot]
                boxes = out["boxes"][slot][keep]
                masks = out["masks"][slot][keep][:, None]
                if self.paste:  # pasted into the canvas; no resizing (checked above)
                    masks = masks[:, :, :original[0], :original[1]]
                else:
                    boxes = boxes_to_original(boxes, resized, original)
                    masks = paste_masks_in_image(masks, boxes, original)
                results.append({"boxes": boxes, "labels": out["labels"][slot][keep],
                                "scores": out["scores"][slot][keep], "masks": masks})
        return results


def load_package(path: str) -> PackagedMaskRCNN:
    """The package ``path`` (``export_static``, ``fastmask export``) as a ``PackagedMaskRCNN``,
    on the device it was exported for."""
    runner = torch._inductor.aoti_load_package(path)
    metadata = runner.get_metadata()
    device = torch.device(metadata.get("device", "cpu"))
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        # Loaded for the current device by default: load it again for the one its inputs go to.
        runner = torch._inductor.aoti_load_package(path, device_index=device.index)
    return PackagedMaskRCNN(runner, metadata)

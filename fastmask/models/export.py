"""Mask R-CNN's ``forward_static`` as one ahead-of-time compiled package (``torch.export`` +
AOTInductor): runs with ``import fastmask`` (which registers the ops) and
``torch._inductor.aoti_load_package``, without fastmask's or torchvision's model code."""
import copy
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from .. import __version__
from .inference import PRECISIONS, optimize_for_inference
from .mask_rcnn import MaskRCNN
from ._components import paste_masks_in_image

__all__ = ["StaticMaskRCNN", "export_program", "export_static"]

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
    height, width = int(size[0]), int(size[1])
    metadata = {"fastmask_version": __version__, "images": f"uint8[{int(batch)}, 3, {height}, {width}]",
                "image_sizes": f"int64[{int(batch)}, 2]", "outputs": "boxes,scores,labels,masks,valid",
                "precision": precision or "as loaded", "paste": str(bool(paste))}
    with torch.no_grad():
        configs = {**(inductor_configs or {}), "aot_inductor.metadata": metadata}
        return torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=configs)

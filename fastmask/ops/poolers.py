"""MultiScaleRoIAlign: a drop-in for ``torchvision.ops.MultiScaleRoIAlign`` that pools
every FPN level in one kernel launch (no Python loop over levels, no per-level
``torch.where`` / gather / scatter)."""
import math
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.fx
from torch import Tensor, nn

from .._loader import check_device
from ._checks import call_op, check_boxes, check_features, deterministic_flag, output_pair, traced_call
from .roi_align import convert_boxes_to_roi_format, roi_align

__all__ = ["MultiScaleRoIAlign", "infer_scales", "map_levels"]


# infer_scales and the helpers below are leaves of torch.fx traces (as torchvision's poolers): a
# traced model calls each as one node, so the features and boxes never meet a Proxy's limits.
def infer_scales(features: List[Tensor], image_shapes: List[Tuple[int, int]]) -> List[float]:
    """Scale of each level: ``2 ** round(log2(feature height / padded image height))``, as torchvision."""
    if not torch.jit.is_scripting():
        node = traced_call(infer_scales, features, image_shapes)
        if node is not None:
            return node
    if len(image_shapes) == 0:
        raise ValueError("image_shapes must not be empty")
    max_h = 0
    for shape in image_shapes:
        max_h = max(max_h, int(shape[0]))
    scales: List[float] = []
    for f in features:
        approx = float(f.shape[-2]) / float(max_h)
        if not torch.jit.is_scripting():
            if torch.compiler.is_compiling():
                # Under torch.compile with dynamic shapes the sizes are symbols: Python math
                # keeps the scale a function of them (a tensor's value would be data-dependent,
                # and any test of the scale then fails). It rounds log2 in float64 where
                # torchvision rounds the float32 one: the same unless feature/image sizes put
                # log2 within 1e-7 of k + 1/2 (FPN levels are exact powers of 2).
                scales.append(2.0 ** round(math.log2(approx)) if approx > 0 else 0.0)  # eager: 2 ** -inf
                continue
        scales.append(2 ** float(torch.tensor(approx).log2().round()))
    return scales


def map_levels(boxes: Tensor, k_min: int, k_max: int, canonical_scale: int = 224,
               canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """FPN level of each box (Eqn. 1 of the FPN paper) minus ``k_min``, computed with the same
    tensor operations as torchvision's LevelMapper so the levels agree exactly."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    lvls = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    lvls = torch.clamp(lvls, min=k_min, max=k_max)
    return lvls.to(torch.int64) - k_min


def _level(scale: float) -> int:
    """The FPN level k of a scale 2**-k."""
    if torch.jit.is_scripting():
        return int(-torch.log2(torch.tensor(scale, dtype=torch.float64)))  # TorchScript has no math.log2
    else:
        return int(-math.log2(scale))  # plain Python: no tensor, nothing for torch.compile to trace


def _filter_input(x: Dict[str, Tensor], featmap_names: List[str]) -> List[Tensor]:
    """The features named in ``featmap_names``, in the dict's order (as torchvision)."""
    if not torch.jit.is_scripting():
        node = traced_call(_filter_input, x, featmap_names)
        if node is not None:
            return node
    features: List[Tensor] = []
    for name, f in x.items():
        if name in featmap_names:
            if not torch.jit.is_scripting():
                check_features(f, f"x[{repr(name)}]")
            features.append(f)
    if len(features) == 0:
        raise ValueError(f"none of featmap_names {featmap_names} is among the features {list(x.keys())}")
    return features


def _multiscale_roi_align(
    features: List[Tensor],
    boxes: List[Tensor],
    scales: List[float],
    output_size: Tuple[int, int],
    sampling_ratio: int,
    canonical_scale: int,
    canonical_level: int,
    deterministic: Optional[bool],
) -> Tensor:
    """Every level in one kernel call: each box pools from its FPN level."""
    if not torch.jit.is_scripting():
        node = traced_call(_multiscale_roi_align, features, boxes, scales, output_size, sampling_ratio,
                           canonical_scale, canonical_level, deterministic)
        if node is not None:
            return node
        check_device(features[0].device)
        if isinstance(boxes, Tensor):
            raise TypeError("boxes must be a list of [L, 4] tensors, one per image")
        check_boxes(boxes)
    # An empty level (scale 0 when inferred, as torchvision infers it) is never sampled: its RoIs
    # pool zeros whatever its scale, so the kernel gets any valid one.
    kernel_scales = [s if s > 0.0 else 1.0 for s in scales]
    if len(features) == 1:
        return roi_align(features[0], boxes, output_size, kernel_scales[0], sampling_ratio, False, deterministic)
    if len(boxes) == 0:
        return features[0].new_zeros((0, features[0].shape[1], output_size[0], output_size[1]))
    if scales[0] <= 0.0 or scales[-1] <= 0.0:
        raise ValueError(f"MultiScaleRoIAlign: the first and last levels' scales set the range of levels, but "
                         f"{scales} were inferred (an empty feature map has no scale); pass scales=[...]")
    k_min, k_max = _level(scales[0]), _level(scales[-1])
    rois = convert_boxes_to_roi_format(boxes)
    levels = map_levels(rois[:, 1:], k_min, k_max, canonical_scale, canonical_level)
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.multi_level_roi_align, features, rois, levels, kernel_scales, output_size[0],
                       output_size[1], sampling_ratio, False, deterministic_flag(deterministic))
    return torch.ops.fastmask.multi_level_roi_align(
        features, rois, levels, kernel_scales, output_size[0], output_size[1], sampling_ratio, False,
        deterministic_flag(deterministic),
    )


class MultiScaleRoIAlign(nn.Module):
    """Multi-level RoIAlign for FPN, as ``torchvision.ops.MultiScaleRoIAlign``: same constructor,
    same call ``(features: Dict[str, Tensor], boxes: List[Tensor[L, 4]], image_shapes)``, same
    level mapping (canonical scale 224, level 4, eps 1e-6, clamped to the available levels).

    Differences: all levels are pooled by one kernel launch, forward and backward; scales are
    inferred on every call from the shapes at hand (torchvision caches those of its first call),
    unless ``scales`` fixes them (one per level, e.g. ``[1/4, 1/8, 1/16, 1/32]``): inference from
    the largest unpadded image height goes wrong when batches are padded far beyond the images
    (a 16:9 image on a square 1024 canvas infers twice the true scales).
    Scriptable with TorchScript; traced by torch.fx as three leaf calls (features, scales, pooling).
    """

    fixed_scales: Optional[List[float]]
    scales: Optional[List[float]]
    deterministic: Optional[bool]

    def __init__(
        self,
        featmap_names: List[str],
        output_size: Union[int, Tuple[int, int], List[int]],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        deterministic: Optional[bool] = None,
        scales: Optional[List[float]] = None,
    ):
        super().__init__()
        if scales is not None and len(scales) != len(featmap_names):
            raise ValueError(f"scales must have one entry per feature map ({len(featmap_names)}), got {scales!r}")
        self.fixed_scales = None if scales is None else [float(s) for s in scales]
        self.featmap_names = featmap_names
        self.sampling_ratio = sampling_ratio
        self.output_size = output_pair(output_size)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.deterministic = deterministic
        self.scales = None

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        fixed_scales = self.fixed_scales
        scales = fixed_scales if fixed_scales is not None else infer_scales(features, image_shapes)
        if torch.jit.is_scripting():
            self.scales = scales
        elif not isinstance(scales, torch.fx.Proxy):  # a trace keeps no Proxy in the module
            self.scales = scales
        return _multiscale_roi_align(features, boxes, scales, self.output_size, self.sampling_ratio,
                                     self.canonical_scale, self.canonical_level, self.deterministic)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(featmap_names={self.featmap_names}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio})"
        )

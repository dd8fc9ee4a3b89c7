"""Bilinear resize: a drop-in for ``F.interpolate(mode="bilinear", align_corners=False)``."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._loader import check_device
from ._checks import call_op, check_tensor

__all__ = ["resize_bilinear"]

_RESIZE_DTYPES = (torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _pair(value, name: str) -> Tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a pair of numbers, got {value!r}")
        return tuple(value)
    return (value, value)


def resize_bilinear(
    input: Tensor,
    size: Optional[Union[int, Sequence[int]]] = None,
    scale_factor: Optional[Union[float, Sequence[float]]] = None,
    recompute_scale_factor: Optional[bool] = None,
) -> Tensor:
    """``torch.nn.functional.interpolate(input, size, scale_factor, mode="bilinear",
    align_corners=False, recompute_scale_factor=...)`` (no antialias), CPU and CUDA.

    ``input``: ``[N, C, H, W]``, uint8, float32/64, float16 or bfloat16, NCHW or channels_last (the
    output has the input's layout). Exactly one of ``size`` and ``scale_factor``; with a scale factor
    the output size is ``floor(H * scale_factor)`` and, unless ``recompute_scale_factor`` is true, the
    sampling uses the scale factor itself, as ``F.interpolate`` does. float32 results equal
    ``F.interpolate``'s on the CPU bit for bit on its 2-D path and within 2 ulp elsewhere; uint8 is
    rounded to nearest (torch's uint8 kernel uses fixed-point weights: within 1).
    """
    check_tensor(input, "input")
    if input.dim() != 4:
        raise ValueError(f"input must be a 4-D [N, C, H, W] tensor, got shape {tuple(input.shape)}")
    if input.dtype not in _RESIZE_DTYPES:
        raise TypeError(f"input must be uint8, float32, float64, float16 or bfloat16, got {input.dtype}")
    if input.shape[2] <= 0 or input.shape[3] <= 0:
        raise ValueError(f"input height and width must be positive, got shape {tuple(input.shape)}")
    if (size is None) == (scale_factor is None):
        raise ValueError("exactly one of size and scale_factor must be given")
    check_device(input.device)
    scales: List[Optional[float]] = [None, None]
    if size is not None:
        out = [int(s) for s in _pair(size, "size")]
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size")
    else:
        factors = [float(s) for s in _pair(scale_factor, "scale_factor")]
        if not all(math.isfinite(s) and s > 0 for s in factors):
            raise ValueError(f"scale_factor must be finite and positive, got {scale_factor!r}")
        out = [math.floor(float(input.shape[2 + i]) * factors[i]) for i in range(2)]
        if not recompute_scale_factor:
            scales = factors
    if out[0] <= 0 or out[1] <= 0:
        raise ValueError(f"the output size must be positive, got {tuple(out)}")
    if not torch.jit.is_scripting():
        return call_op(torch.ops.fastmask.resize_bilinear, input, out[0], out[1], scales[0], scales[1])
    return torch.ops.fastmask.resize_bilinear(input, out[0], out[1], scales[0], scales[1])

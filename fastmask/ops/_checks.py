"""Argument checks shared by the op wrappers: clear Python errors naming the argument."""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

_FEATURE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")


def check_features(x: Tensor, name: str) -> None:
    check_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    if x.dtype not in _FEATURE_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {x.dtype}")


def _check_box_tensor(b: Tensor, name: str, columns: int) -> None:
    if b.dim() != 2 or b.shape[1] != columns:
        layout = "(batch index, x1, y1, x2, y2)" if columns == 5 else "(x1, y1, x2, y2)"
        raise ValueError(f"{name} must be a [K, {columns}] tensor {layout}, got shape {tuple(b.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {b.dtype}")


def check_boxes(boxes: Union[Tensor, List[Tensor]]) -> None:
    """torchvision's two box formats: a [K, 5] tensor or a list of [L_i, 4] tensors."""
    if isinstance(boxes, Tensor):
        _check_box_tensor(boxes, "boxes", 5)
        return
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a [K, 5] Tensor or a list of [L, 4] Tensors, got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor):
            raise TypeError(f"boxes[{i}] must be a Tensor, got {type(b).__name__}")
        _check_box_tensor(b, f"boxes[{i}]", 4)
    devices = {b.device for b in boxes}
    if len(devices) > 1:
        raise ValueError(f"all boxes must be on one device, got {sorted(str(d) for d in devices)}")


def output_pair(output_size: Union[int, Tuple[int, int], List[int]]) -> Tuple[int, int]:
    if isinstance(output_size, int):
        pair = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        pair = (int(output_size[0]), int(output_size[1]))
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 1:
        pair = (int(output_size[0]), int(output_size[0]))
    else:
        raise TypeError(f"output_size must be an int or a pair of ints, got {output_size!r}")
    if pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(f"output_size must be positive, got {pair}")
    return pair


def resolve_deterministic(deterministic: Optional[bool]) -> bool:
    """An explicit choice, else torch.use_deterministic_algorithms's setting."""
    if deterministic is None:
        return torch.are_deterministic_algorithms_enabled()
    return bool(deterministic)


def is_channels_last(x: Tensor) -> bool:
    """The layout rule of the kernels: channels_last when it is not also plain contiguous."""
    return (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)

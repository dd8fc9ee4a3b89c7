"""Argument checks shared by the op wrappers: clear Python errors naming the argument.

Where torchvision raises another class for the same mistake (AssertionError for the shape of
roi_align's boxes, RuntimeError for NMS arguments), the error is both: a caller's ``except``
written for torchvision still catches it.
"""
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.fx
from torch import Tensor

_FEATURE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class BoxShapeError(ValueError, AssertionError):
    """RoI boxes of the wrong shape (torchvision's roi_align asserts)."""


class BoxTypeError(TypeError, AssertionError):
    """RoI boxes that are not a tensor or a list of tensors (torchvision's roi_align asserts)."""


class NmsArgumentError(ValueError, RuntimeError):
    """Bad NMS arguments: shapes, sizes (torchvision's nms raises RuntimeError)."""


class NmsTypeError(TypeError, RuntimeError):
    """NMS arguments of the wrong type (torchvision's nms raises RuntimeError)."""


def traced_call(fn: Callable, *args):
    """Under a torch.fx symbolic trace (a Proxy among the arguments, or in a list or dict of
    them): ``fn(*args)`` as one graph node, as a torch.fx.wrap'ed function is traced. Else None.
    torch.fx.wrap only intercepts calls through the defining module's globals; this makes the op
    a leaf however it is reached (``from fastmask.ops import nms``, ``fastmask.ops.nms``, ...)."""
    for arg in args:
        items = arg.values() if isinstance(arg, dict) else arg if isinstance(arg, (list, tuple)) else (arg,)
        for item in items:
            if isinstance(item, torch.fx.Proxy):
                return item.tracer.create_proxy("call_function", fn, args, {})
    return None


def call_op(op: Callable, *args, value_error: type = ValueError, type_error: type = TypeError):
    """Runs a fastmask op, raising the value and type errors of its C++ argument checks as those
    classes. The op libraries use PyTorch's stable ABI, across which only IndexError keeps its
    class: the others arrive as a RuntimeError whose message starts with the class name."""
    try:
        return op(*args)
    except RuntimeError as exc:
        message = str(exc)
        for prefix, error in (("ValueError: ", value_error), ("TypeError: ", type_error)):
            if message.startswith(prefix):
                raise error(message[len(prefix):]) from None
        raise


def call_nms_op(op: Callable, *args):
    """Runs an NMS op, raising its argument errors as NmsArgumentError / NmsTypeError."""
    return call_op(op, *args, value_error=NmsArgumentError, type_error=NmsTypeError)


def check_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")


def check_features(x: Tensor, name: str) -> None:
    check_tensor(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    if x.dtype not in _FEATURE_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {x.dtype}")


def _check_box_tensor(b: Tensor, name: str, columns: int, quantized: bool) -> None:
    if b.dim() != 2 or b.shape[1] != columns:
        layout = "(batch index, x1, y1, x2, y2)" if columns == 5 else "(x1, y1, x2, y2)"
        raise BoxShapeError(f"{name} must be a [K, {columns}] tensor {layout}, got shape {tuple(b.shape)}")
    if quantized and not b.is_quantized:
        raise ValueError(f"{name}: if input is quantized, rois must also be quantized")
    if not quantized and not b.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {b.dtype}")


def check_boxes(boxes: Union[Tensor, List[Tensor]], quantized: bool = False) -> None:
    """torchvision's two box formats: a [K, 5] tensor or a list of [L_i, 4] tensors; quantized
    when the features are."""
    if isinstance(boxes, Tensor):
        _check_box_tensor(boxes, "boxes", 5, quantized)
        return
    if not isinstance(boxes, (list, tuple)):
        raise BoxTypeError(f"boxes must be a [K, 5] Tensor or a list of [L, 4] Tensors, got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor):
            raise BoxTypeError(f"boxes[{i}] must be a Tensor, got {type(b).__name__}")
        _check_box_tensor(b, f"boxes[{i}]", 4, quantized)
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


def deterministic_flag(deterministic: Optional[bool]) -> bool:
    """The op's `deterministic` argument: an explicit choice, else False, and the backward adds
    torch.use_deterministic_algorithms's setting when it runs. TorchScript-compatible."""
    return False if deterministic is None else deterministic


def is_channels_last(x: Tensor) -> bool:
    """The layout rule of the kernels: channels_last when it is not also plain contiguous."""
    return (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)

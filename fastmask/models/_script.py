"""TorchScript helpers for the models."""
import types

__all__ = ["renamed"]


def renamed(fn: types.FunctionType, name: str) -> types.FunctionType:
    """A copy of ``fn`` called ``name``: TorchScript has no ``super()`` and compiles a method under
    its function's name, so a base class's method that an override calls is kept as a renamed copy."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__annotations__, copy.__doc__ = fn.__kwdefaults__, dict(fn.__annotations__), fn.__doc__
    return copy

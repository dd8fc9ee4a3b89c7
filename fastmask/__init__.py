"""fastmask: hand-written C++/CUDA kernels for Mask R-CNN, drop-in for torchvision's ops."""
import warnings

from . import _loader
from ._loader import FastmaskBuildError

_C = _loader.load()
if _C is None:
    # Importing never fails because of the compiled part; calling an op raises this error.
    warnings.warn(f"{_loader._state['error']}\n(fastmask ops will raise this error when called)", RuntimeWarning)

from . import ops  # noqa: E402
from .ops._checks import BoxShapeError, BoxTypeError, NmsArgumentError, NmsTypeError  # noqa: E402

_info = _loader.build_info()
__version__ = _info.version if _info is not None else "0.1.0+unknown"
__all__ = ["ops", "models", "patch_torchvision", "FastmaskBuildError", "BoxShapeError", "BoxTypeError",
           "NmsArgumentError", "NmsTypeError", "__version__"]


def __getattr__(name):
    # The models need torchvision, which the ops do not: import them on first use.
    if name in ("models", "patch_torchvision"):
        import importlib

        models = importlib.import_module(".models", __name__)
        return models if name == "models" else models.patch_torchvision
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

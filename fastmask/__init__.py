"""fastmask: hand-written C++/CUDA kernels for Mask R-CNN, drop-in for torchvision's ops."""
from ._loader import FastmaskBuildError, load_extension

_C = load_extension()

from . import ops  # noqa: E402  (registers fake kernels and autograd for the ops in _C)

__version__ = "0.1.0"
__all__ = ["ops", "FastmaskBuildError", "__version__"]

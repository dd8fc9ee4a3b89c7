"""Loads fastmask._C and turns the ways it can fail into clear, actionable errors.

`import fastmask` never fails because of the compiled part: a missing or mismatched `_C` is
recorded, and the error is raised when an op is called (`require_extension`). What the build
targeted is read from `_build_info.py` (written by setup.py) *before* `_C` is loaded, so an
extension built for another torch is never loaded at all.
"""
import importlib
from typing import Optional, Tuple

import torch

REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps -e .  (from the source tree)"


class FastmaskBuildError(ImportError):
    """The compiled kernels are missing, built for another torch, or lack this GPU's architecture."""


_state = {"ext": None, "error": None}


def build_info():
    try:
        return importlib.import_module("fastmask._build_info")
    except ImportError:
        return None


def torch_release(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _mismatch(built: str, running: str) -> FastmaskBuildError:
    return FastmaskBuildError(
        f"fastmask: this fastmask was built for torch {built}, but torch {running} is running. A compiled "
        f"extension only works with the torch release it was built against. Install the fastmask wheel "
        f"built for torch {torch_release(running)} (its version ends in +torch{torch_release(running)}...), "
        f"or rebuild: {REBUILD}"
    )


def load_extension():
    """Imports fastmask._C, or raises FastmaskBuildError saying what is wrong and what to do."""
    info = build_info()
    if info is not None and torch_release(info.torch_version) != torch_release(torch.__version__):
        raise _mismatch(info.torch_version, torch.__version__)
    try:
        ext = importlib.import_module("fastmask._C")
    except ImportError as exc:
        msg = str(exc)
        if "undefined symbol" in msg:
            hint = (
                f"fastmask._C does not match the torch running now ({torch.__version__}): it was most likely "
                f"built against another PyTorch. Rebuild: {REBUILD}"
            )
        else:
            hint = (
                "fastmask._C is not built. From the source tree run:\n"
                "    pip install --no-build-isolation -e .\n"
                "(or bash scripts/setup.sh to create the project venv first)"
            )
        raise FastmaskBuildError(f"fastmask: cannot load the compiled kernels: {msg}\n{hint}") from exc
    if torch_release(ext.torch_version) != torch_release(torch.__version__):
        raise _mismatch(ext.torch_version, torch.__version__)
    return ext


def load() -> Optional[object]:
    """Called once by `import fastmask`: loads the extension or records why it cannot."""
    try:
        _state["ext"] = load_extension()
    except FastmaskBuildError as exc:
        _state["error"] = exc
    return _state["ext"]


def require_extension():
    """The loaded extension, or the recorded FastmaskBuildError (raised at op-call time)."""
    if _state["ext"] is None:
        err = _state["error"] or FastmaskBuildError("fastmask: the compiled kernels were not loaded")
        raise FastmaskBuildError(str(err))
    return _state["ext"]


def parse_archs(archs: str):
    """TORCH_CUDA_ARCH_LIST syntax -> (set of (major, minor) with machine code, list with PTX)."""
    cubins, ptx = set(), []
    for entry in archs.replace(",", ";").replace(" ", ";").split(";"):
        entry = entry.strip()
        base = entry.replace("+PTX", "")
        try:
            major, minor = (int(v) for v in base.split(".")[:2])
        except ValueError:
            continue
        cubins.add((major, minor))
        if entry.endswith("+PTX"):
            ptx.append((major, minor))
    return cubins, ptx


def arch_coverage(archs: str, capability: Tuple[int, int]) -> Tuple[bool, str]:
    """Whether kernels compiled for `archs` run on a GPU of `capability`, and how."""
    cubins, ptx = parse_archs(archs)
    major, minor = capability
    # Machine code runs on the same major architecture with an equal or higher minor version.
    if any(ma == major and mi <= minor for ma, mi in cubins):
        return True, "yes (compiled for it)"
    if any((ma, mi) <= (major, minor) for ma, mi in ptx):
        return True, "yes (PTX, JIT-compiled on first use)"
    return False, f"NO: rebuild with TORCH_CUDA_ARCH_LIST including {major}.{minor}"


_checked_devices = {}


def check_device(device: torch.device) -> None:
    """Raises FastmaskBuildError if fastmask cannot run on `device` (CUDA only)."""
    ext = require_extension()
    if device.type != "cuda":
        return
    if not ext.with_cuda:
        raise FastmaskBuildError(cpu_only_message())
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _checked_devices:
        capability = torch.cuda.get_device_capability(index)
        ok, _ = arch_coverage(ext.cuda_archs, capability)
        _checked_devices[index] = None if ok else FastmaskBuildError(
            f"fastmask: no kernels for this GPU: {torch.cuda.get_device_name(index)} is sm_{capability[0]}{capability[1]}, "
            f"and this fastmask carries machine code for {ext.cuda_archs} with no PTX it could be compiled from. "
            f"Install a wheel built for it, or rebuild with TORCH_CUDA_ARCH_LIST=\"{capability[0]}.{capability[1]}\": "
            f"{REBUILD}"
        )
    if _checked_devices[index] is not None:
        raise _checked_devices[index]


def cpu_only_message() -> str:
    return (
        "fastmask: a CUDA tensor reached a CPU-only build of fastmask (built with FASTMASK_CUDA=0 or "
        "without nvcc), which has no CUDA kernels. Install the CUDA wheel, or rebuild with a CUDA "
        f"toolkit: FASTMASK_CUDA=1 {REBUILD}"
    )

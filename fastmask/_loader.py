"""Loads fastmask's op libraries and turns the ways that can fail into clear, actionable errors.

The kernels live in two shared libraries built against PyTorch's stable ABI, so they load under
every torch from `torch_target` (2.11) on: fastmask/lib/libfastmask_ops.so (schemas, CPU and
quantized CPU kernels) and fastmask/lib/libfastmask_ops_cuda.so (CUDA kernels, for one CUDA major
version). fastmask._C (pybind11, built per CPython) loads them and reports how they were built.

`import fastmask` never fails because of the compiled part: a missing or unloadable library is
recorded, and the error is raised when an op is called (`require_extension`). The CUDA library
is loaded only where it can work (a CUDA build of torch with the same CUDA major version);
otherwise CUDA calls raise an error that says which build to install, and the CPU kernels work.
"""
import importlib
import os
from typing import Optional, Tuple

import torch

REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps -e .  (from the source tree)"
LIBRARY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")


class FastmaskBuildError(ImportError):
    """The compiled kernels are missing, cannot load under this torch, or lack this GPU's architecture."""


# ext: fastmask._C once the CPU op library is loaded; error: why not. cuda_error: why CUDA calls
# cannot run (None when the CUDA op library is loaded).
_state = {"ext": None, "error": None, "cuda_error": None}


def build_info():
    try:
        return importlib.import_module("fastmask._build_info")
    except ImportError:
        return None


def release(version: str) -> Tuple[int, int]:
    """(major, minor) of a version string such as "2.14.1+cu130"."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def torch_target() -> str:
    info = build_info()
    return info.torch_target if info is not None else "2.11"


def library_path(name: str) -> str:
    return os.path.join(LIBRARY_DIR, name + ".so")


def load_extension():
    """Imports fastmask._C and loads the CPU op library, or raises FastmaskBuildError saying
    what is wrong and what to do."""
    target = torch_target()
    if release(torch.__version__) < release(target):
        raise FastmaskBuildError(
            f"fastmask: torch {torch.__version__} is too old. fastmask's kernels use PyTorch's stable ABI and "
            f"need torch {target} or newer: pip install -U 'torch>={target}'"
        )
    try:
        ext = importlib.import_module("fastmask._C")
    except ImportError as exc:
        raise FastmaskBuildError(
            f"fastmask: cannot load fastmask._C: {exc}\nfastmask is not built (or was built for another Python). "
            "From the source tree run:\n    pip install --no-build-isolation -e .\n"
            "(or bash scripts/setup.sh to create the project venv first)"
        ) from exc
    try:
        ext.load_library(library_path("libfastmask_ops"))
    except ImportError as exc:
        raise FastmaskBuildError(
            f"fastmask: cannot load its op library: {exc}\nReinstall fastmask, or rebuild it: {REBUILD}"
        ) from exc
    return ext


def cuda_major(version: Optional[str]) -> Optional[int]:
    return int(version.split(".")[0]) if version else None


def wheel_for_cuda(major: int) -> str:
    """The fastmask build to install for a torch built with CUDA `major`."""
    default = "the default fastmask wheel (pip install fastmask)"
    info = build_info()
    base = info.version.split("+")[0] if info is not None else "0.1.0"
    return default + " (CUDA 13)" if major == 13 else f"fastmask's CUDA {major} build (version {base}+cu{major})"


def load_cuda(ext) -> Optional[str]:
    """Loads the CUDA op library where it can work. Returns None when it is loaded, else the
    reason, which CUDA calls then raise."""
    if not ext.with_cuda:
        return cpu_only_message()
    torch_cuda = cuda_major(torch.version.cuda)
    if torch_cuda is None:
        return (f"fastmask: torch {torch.__version__} is a CPU-only build, so it has no CUDA; install a CUDA build "
                "of torch to run fastmask's CUDA kernels")
    built = cuda_major(ext.cuda_version)
    if torch_cuda != built:
        return (
            f"fastmask: this fastmask's CUDA kernels were built for CUDA {built} ({ext.cuda_version}), but torch "
            f"{torch.__version__} uses CUDA {torch.version.cuda}, and one process cannot mix the two CUDA runtimes. "
            f"Install {wheel_for_cuda(torch_cuda)}, or a torch built for CUDA {built}. (fastmask's CPU kernels "
            "work as they are.)"
        )
    try:
        ext.load_library(library_path("libfastmask_ops_cuda"))
    except ImportError as exc:
        return f"fastmask: cannot load its CUDA op library: {exc}\nReinstall fastmask, or rebuild it: {REBUILD}"
    return None


def load() -> Optional[object]:
    """Called once by `import fastmask`: loads the op libraries or records why it cannot."""
    try:
        _state["ext"] = load_extension()
    except FastmaskBuildError as exc:
        _state["error"] = exc
        return None
    _state["cuda_error"] = load_cuda(_state["ext"])
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
    if _state["cuda_error"] is not None:
        raise FastmaskBuildError(_state["cuda_error"])
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _checked_devices:
        capability = torch.cuda.get_device_capability(index)
        ok, _ = arch_coverage(ext.cuda_archs, capability)
        _checked_devices[index] = None if ok else FastmaskBuildError(
            f"fastmask: no kernels for this GPU: {torch.cuda.get_device_name(index)} is sm_{capability[0]}{capability[1]}, "
            f"and this fastmask carries machine code for {ext.cuda_archs} with no PTX it could be compiled from. "
            f"Install a fastmask build that covers it, or rebuild with "
            f"TORCH_CUDA_ARCH_LIST=\"{capability[0]}.{capability[1]}\": {REBUILD}"
        )
    if _checked_devices[index] is not None:
        raise _checked_devices[index]


def cpu_only_message() -> str:
    return (
        "fastmask: a CUDA tensor reached a CPU-only build of fastmask (built with FASTMASK_CUDA=0 or "
        "without nvcc), which has no CUDA kernels. Install the CUDA wheel, or rebuild with a CUDA "
        f"toolkit: FASTMASK_CUDA=1 {REBUILD}"
    )

"""Loads fastmask._C and turns the ways it can fail into one actionable error."""
import importlib

import torch


class FastmaskBuildError(ImportError):
    pass


def _torch_release(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def load_extension():
    try:
        ext = importlib.import_module("fastmask._C")
    except ImportError as exc:
        msg = str(exc)
        if "undefined symbol" in msg or "version" in msg.lower():
            hint = (
                "fastmask._C was most likely built against another PyTorch than the one running "
                f"now ({torch.__version__}). Rebuild it against this torch:\n"
                "    pip install --no-build-isolation --force-reinstall --no-deps -e ."
            )
        else:
            hint = (
                "fastmask._C is not built. From the source tree run:\n"
                "    pip install --no-build-isolation -e .\n"
                "(or ./scripts/setup.sh to create the project venv first)"
            )
        raise FastmaskBuildError(f"fastmask: cannot load the compiled kernels: {msg}\n{hint}") from exc
    built, running = ext.torch_version, torch.__version__
    if _torch_release(built) != _torch_release(running):
        raise FastmaskBuildError(
            f"fastmask: fastmask._C was built against torch {built} but torch {running} is running; "
            "a compiled extension only works with the torch release it was built for. Rebuild:\n"
            "    pip install --no-build-isolation --force-reinstall --no-deps -e ."
        )
    return ext

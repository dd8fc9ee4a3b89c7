"""Build and runtime facts for a bug report: python -m fastmask.collect_env"""
import os
import platform
import sys


def _registered_ops(torch) -> list:
    """Ops in the dispatcher under the fastmask namespace, with the backends that have kernels."""
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("fastmask::"))
    ops = []
    for name in names:
        keys = [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(name, k)]
        ops.append(f"{name.split('::', 1)[1]} ({', '.join(keys) or 'no kernel'})")
    return ops


def collect() -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda,
        "CUDA available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    try:
        import fastmask
        from fastmask import _loader

        built = _loader.build_info()
        if built is not None:
            info["fastmask build"] = (
                f"{built.version} (built with torch {built.built_with_torch} for torch >= {built.torch_target}, "
                f"CUDA {built.cuda_version}, archs {built.cuda_archs})"
            )
        ext = _loader.require_extension()
        cuda_error = _loader._state["cuda_error"]
        info.update(
            {
                "fastmask": fastmask.__version__,
                "fastmask location": os.path.dirname(fastmask.__file__),
                "fastmask runs on torch >=": ext.torch_target,
                "fastmask CUDA kernels": "loaded" if cuda_error is None else f"not loaded: {cuda_error}",
                "fastmask CUDA version": ext.cuda_version or None,
                "fastmask CUDA archs": ext.cuda_archs or None,
                "fastmask ops": _registered_ops(torch),
            }
        )
    except Exception as exc:  # noqa: BLE001 - the report must print even when the import fails
        info["fastmask kernels"] = f"NOT LOADED: {exc}"
        ext = None
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            line = f"{torch.cuda.get_device_name(i)} (sm_{major}{minor})"
            if ext is not None and _loader._state["cuda_error"] is None:
                line += ", fastmask kernels: " + _loader.arch_coverage(ext.cuda_archs, (major, minor))[1]
            info[f"GPU {i}"] = line
    return info


def main() -> None:
    for key, value in collect().items():
        print(f"{key:30s} {value}")


if __name__ == "__main__":
    main()

"""Builds fastmask._C, the compiled kernels.

Build switches (environment variables, printed at build time):
  FASTMASK_CUDA=0|1      0: CPU-only build. 1: build the CUDA kernels (fail if nvcc is missing).
                         Unset: build them when nvcc is found.
  TORCH_CUDA_ARCH_LIST   CUDA architectures, default "8.0;8.6;8.9;9.0+PTX" (Ampere to Hopper).
  MAX_JOBS               parallel compile jobs (ninja).
  FASTMASK_DEBUG=1       -O0 -g host and device code.
"""
import glob
import os
import sys

from setuptools import find_packages, setup



def _locate_cuda_home():
    """torch finds the toolkit from CUDA_HOME, else from `which nvcc`. An nvcc that is a wrapper
    script outside the toolkit (as /usr/local/bin/nvcc here) would point it at a folder without
    the CUDA headers, so resolve the real toolkit first."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    import shutil

    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) and os.path.exists(
            os.path.join(home, "bin", "nvcc")
        ):
            os.environ["CUDA_HOME"] = home
            return


_locate_cuda_home()

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - a build requirement
    sys.exit(
        "fastmask: building needs PyTorch installed first, and pip's build isolation off so the "
        "build sees it:\n  pip install torch && pip install --no-build-isolation -e ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def find_nvcc():
    home = cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    return None


def want_cuda():
    flag = os.environ.get("FASTMASK_CUDA", "").strip()
    home = find_nvcc()
    if flag == "0":
        return False, "off (FASTMASK_CUDA=0)"
    if flag == "1":
        if home is None:
            sys.exit(
                "fastmask: FASTMASK_CUDA=1 but no CUDA toolkit was found. Install one (nvcc) and "
                "set CUDA_HOME, or build CPU-only with FASTMASK_CUDA=0."
            )
        return True, f"on (FASTMASK_CUDA=1, {home})"
    if home is None:
        return False, "off (no nvcc found; set CUDA_HOME or FASTMASK_CUDA=1 to require it)"
    if torch.version.cuda is None:
        return False, "off (this torch is a CPU-only build)"
    return True, f"on (nvcc found in {home})"


def extra_cuda_includes():
    """torch's CUDA headers include cuBLAS/cuSPARSE headers. A runtime-only toolkit lacks them;
    the torch wheel's nvidia-* dependencies ship them, so take them from there."""
    home = find_nvcc()
    if home and os.path.exists(os.path.join(home, "include", "cublas_v2.h")):
        return []
    found = []
    for entry in sys.path:
        for header in glob.glob(os.path.join(entry, "nvidia", "*", "include", "cublas_v2.h")):
            found.append(os.path.dirname(header))
        for header in glob.glob(os.path.join(entry, "nvidia", "*", "include", "cusparse.h")):
            found.append(os.path.dirname(header))
    return sorted(set(found))


def cuda_version(home):
    try:
        import re
        import subprocess

        out = subprocess.check_output([os.path.join(home, "bin", "nvcc"), "--version"], text=True)
        return re.search(r"release ([\d.]+)", out).group(1)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def build_extension():
    with_cuda, cuda_reason = want_cuda()
    debug = os.environ.get("FASTMASK_DEBUG", "0") == "1"
    sources = [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True))]
    # CUDA bindings (*_cuda_ops.cpp) compile with the host compiler, only in CUDA builds.
    cuda_bindings = [s for s in sources if s.endswith("_cuda_ops.cpp")]
    sources = [s for s in sources if s not in cuda_bindings]
    define_macros = [("FASTMASK_TORCH_VERSION", f'"{torch.__version__}"')]
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx = opt + ["-ffp-contract=off"]  # the C++ standard is chosen by torch
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")  # at::parallel_for's OpenMP backend is inlined into our code
    extra_link = ["-fopenmp"] if sys.platform.startswith("linux") else []
    archs = ""
    extra_includes = []
    if with_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += cuda_bindings
        sources += [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True))]
        extra_includes = extra_cuda_includes()
        # Searched after the toolkit's own headers, so only what the toolkit lacks comes from there.
        for d in extra_includes:
            cxx += ["-idirafter", d]
        define_macros += [
            ("FASTMASK_WITH_CUDA", None),
            ("FASTMASK_CUDA_VERSION", f'"{cuda_version(find_nvcc())}"'),
            ("FASTMASK_CUDA_ARCHS", f'"{archs}"'),
        ]
        # -fmad=false: no contracted multiply-adds, so device arithmetic equals the CPU kernels bit for bit.
        nvcc = (["-O0", "-G", "-g"] if debug else ["-O3", "-lineinfo"]) + ["-fmad=false"]
        extension = cpp_extension.CUDAExtension
        extra_compile_args = {"cxx": cxx, "nvcc": nvcc}
    else:
        extension = cpp_extension.CppExtension
        extra_compile_args = {"cxx": cxx}

    print("=" * 72)
    print("fastmask build configuration")
    print(f"  torch               {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"  CUDA kernels        {cuda_reason}")
    print(f"  TORCH_CUDA_ARCH_LIST {archs or '-'}")
    print(f"  extra CUDA includes {extra_includes or '-'}")
    print(f"  MAX_JOBS            {os.environ.get('MAX_JOBS', '(ninja default)')}")
    print(f"  debug               {debug}")
    print(f"  sources             {len(sources)}")
    print("=" * 72, flush=True)

    return extension(
        name="fastmask._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link,
    )


setup(
    packages=find_packages(include=["fastmask", "fastmask.*"]),
    ext_modules=[build_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)

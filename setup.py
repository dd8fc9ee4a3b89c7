"""Builds fastmask._C, the compiled kernels.

Build switches (environment variables, printed at build time):
  FASTMASK_CUDA=0|1      0: CPU-only build. 1: build the CUDA kernels (fail if nvcc is missing).
                         Unset: build them when nvcc is found.
  TORCH_CUDA_ARCH_LIST   CUDA architectures, default "8.0;8.6;8.9;9.0+PTX" (Ampere to Hopper).
  MAX_JOBS               parallel compile jobs (ninja).
  FASTMASK_DEBUG=1       -O0 -g host and device code, not stripped (release builds strip debug info).
  FASTMASK_ALLOW_UNSUPPORTED_TORCH=1  build against a torch outside the supported releases
                         (pyproject.toml's build requirement), untested.
"""
import glob
import os
import re
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
BASE_VERSION = "0.1.0"
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"
TORCH_RELEASE = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])


def supported_torch():
    """The supported torch releases, from pyproject.toml's build requirement (the one place they
    are written), e.g. "torch>=2.11,<2.16": (that requirement, oldest (2, 11), newest (2, 15))."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        match = re.search(r'"(torch>=(\d+)\.(\d+),<(\d+)\.(\d+))"', f.read())
    if match is None:
        sys.exit('fastmask: pyproject.toml must require "torch>=X.Y,<X.Z" in [build-system]')
    requirement, lo_major, lo_minor, hi_major, hi_minor = match.groups()
    return requirement, (int(lo_major), int(lo_minor)), (int(hi_major), int(hi_minor) - 1)


TORCH_SUPPORTED, TORCH_OLDEST, TORCH_NEWEST = supported_torch()


def check_torch_release():
    """Refuses to build against a torch outside the supported range (pip checks the build
    requirement only with build isolation on, which fastmask's build turns off), unless
    FASTMASK_ALLOW_UNSUPPORTED_TORCH=1. Returns what the build banner says about it."""
    span = f"{TORCH_OLDEST[0]}.{TORCH_OLDEST[1]} to {TORCH_NEWEST[0]}.{TORCH_NEWEST[1]}"
    if "sdist" in sys.argv:
        return f"not checked (an sdist compiles nothing; it builds against torch {span})"
    if TORCH_OLDEST <= TORCH_RELEASE <= TORCH_NEWEST:
        return f"supported ({span})"
    if os.environ.get("FASTMASK_ALLOW_UNSUPPORTED_TORCH") == "1":
        return f"NOT supported ({span}); building anyway (FASTMASK_ALLOW_UNSUPPORTED_TORCH=1)"
    sys.exit(
        f"fastmask: torch {torch.__version__} is not supported: fastmask builds against torch {span} "
        f"({TORCH_SUPPORTED}, pyproject.toml). Install a torch in that range, or set "
        "FASTMASK_ALLOW_UNSUPPORTED_TORCH=1 to build against this one untested."
    )


def package_version(with_cuda):
    """0.1.0+torch2.14.cu130: the local tag names the torch release and CUDA the wheel needs.
    An sdist is source for any torch: it carries the plain version."""
    if "sdist" in sys.argv:
        return BASE_VERSION
    cuda = "cu" + torch.version.cuda.replace(".", "") if with_cuda else "cpu"
    return f"{BASE_VERSION}+torch{TORCH_RELEASE[0]}.{TORCH_RELEASE[1]}.{cuda}"


def torch_requirement():
    """A compiled extension is ABI-compatible with one torch release series only; an sdist
    builds against whichever supported torch is installed."""
    if "sdist" in sys.argv:
        return TORCH_SUPPORTED
    major, minor = TORCH_RELEASE
    return f"torch>={major}.{minor},<{major}.{minor + 1}"


def write_build_info(package_dir, with_cuda, archs):
    """<package_dir>/_build_info.py: what _C was built for, readable without loading _C (so a
    mismatched _C is never loaded, and errors can name both sides)."""
    info = {
        "version": package_version(with_cuda),
        "torch_version": torch.__version__,
        "with_cuda": with_cuda,
        "cuda_version": torch.version.cuda if with_cuda else None,
        "cuda_archs": archs or None,
    }
    os.makedirs(package_dir, exist_ok=True)
    with open(os.path.join(package_dir, "_build_info.py"), "w") as f:
        f.write('"""Written by setup.py at build time; do not edit."""\n')
        for key, value in info.items():
            f.write(f"{key} = {value!r}\n")


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
        if torch.version.cuda is None:
            sys.exit(
                f"fastmask: FASTMASK_CUDA=1 but torch {torch.__version__} is a CPU-only build; install a "
                "CUDA build of torch, or build CPU-only with FASTMASK_CUDA=0."
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
    torch_support = check_torch_release()
    with_cuda, cuda_reason = want_cuda()
    nvcc_home = find_nvcc()
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
    if not debug and sys.platform.startswith("linux"):
        extra_link.append("-Wl,--strip-debug")  # release builds ship no debug information
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
            ("FASTMASK_CUDA_VERSION", f'"{cuda_version(nvcc_home)}"'),
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
    print(f"  torch               {torch.__version__} (CUDA {torch.version.cuda}), {torch_support}")
    print(f"  CUDA kernels        {cuda_reason}")
    print(f"  TORCH_CUDA_ARCH_LIST {archs or '-'}")
    print(f"  extra CUDA includes {extra_includes or '-'}")
    print(f"  MAX_JOBS            {os.environ.get('MAX_JOBS', '(ninja default)')}")
    print(f"  debug               {debug}")
    print(f"  sources             {len(sources)}")
    print(f"  version             {package_version(with_cuda)} (requires {torch_requirement()})")
    print("=" * 72, flush=True)

    return with_cuda, archs, extension(
        name="fastmask._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link,
    )


class BuildExtension(cpp_extension.BuildExtension):
    """Also writes fastmask/_build_info.py next to the built _C: into the build tree for wheels,
    and into the source tree for in-place and editable builds (never for an sdist)."""

    def run(self):
        super().run()
        dirs = [os.path.join(self.build_lib, "fastmask")]
        if self.inplace or getattr(self, "editable_mode", False):
            dirs.append(os.path.join(ROOT, "fastmask"))
        for d in dirs:
            write_build_info(d, WITH_CUDA, ARCHS)


WITH_CUDA, ARCHS, EXTENSION = build_extension()
setup(
    version=package_version(WITH_CUDA),
    install_requires=[torch_requirement()],
    packages=find_packages(include=["fastmask", "fastmask.*"]),
    ext_modules=[EXTENSION],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)

"""Builds fastmask: its op libraries and the fastmask._C module.

- fastmask/lib/libfastmask_ops.so: the schemas and the CPU (and quantized CPU) kernels;
  fastmask/lib/libfastmask_ops_cuda.so: the CUDA kernels. Both use PyTorch's stable ABI only
  (TORCH_TARGET_VERSION = torch 2.11), so one build loads under every torch from 2.11 on, and
  neither depends on the Python version.
- fastmask._C (pybind11, per CPython): the build facts and the loader of the op libraries.

Build switches (environment variables, printed at build time):
  FASTMASK_CUDA=0|1      0: CPU-only build. 1: build the CUDA kernels (fail if nvcc is missing).
                         Unset: build them when nvcc is found.
  TORCH_CUDA_ARCH_LIST   CUDA architectures, default "8.0;8.6;8.9;9.0+PTX" (Ampere to Hopper).
  MAX_JOBS               parallel compile jobs (ninja).
  FASTMASK_DEBUG=1       -O0 -g host and device code, not stripped (release builds strip debug info).
"""
import glob
import os
import re
import sys

from setuptools import Extension, find_packages, setup


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
        "fastmask: building needs PyTorch (2.11 or newer) installed first, and pip's build isolation off so "
        "the build sees it:\n  pip install 'torch>=2.11' && pip install --no-build-isolation -e ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
BASE_VERSION = "0.1.0"
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"
# The CUDA major version of the default wheel (the one without a local version tag).
DEFAULT_CUDA_MAJOR = 13
# The oldest torch the op libraries load under: the stable ABI's target version.
TORCH_TARGET = (2, 11)
TORCH_TARGET_VERSION = f"0x{TORCH_TARGET[0]:02x}{TORCH_TARGET[1]:02x}000000000000"
TORCH_RELEASE = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
OP_LIBRARIES = ("fastmask.lib.libfastmask_ops", "fastmask.lib.libfastmask_ops_cuda")


def check_torch_release():
    """The build needs the stable ABI's headers of TORCH_TARGET or newer (any newer torch builds
    the same library). Returns what the build banner says about it."""
    if "sdist" in sys.argv:
        return "not checked (an sdist compiles nothing)"
    target = f"{TORCH_TARGET[0]}.{TORCH_TARGET[1]}"
    if TORCH_RELEASE < TORCH_TARGET:
        sys.exit(f"fastmask: building needs torch {target} or newer (its stable ABI); torch {torch.__version__} is "
                 f"installed. pip install 'torch>={target}'")
    return f"ok (the op libraries target torch >= {target} through its stable ABI)"


def find_nvcc():
    home = cpp_extension.CUDA_HOME
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    return None


def cuda_version(home):
    try:
        import subprocess

        out = subprocess.check_output([os.path.join(home, "bin", "nvcc"), "--version"], text=True)
        return re.search(r"release ([\d.]+)", out).group(1)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


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
                f"fastmask: FASTMASK_CUDA=1 but torch {torch.__version__} is a CPU-only build, which has no CUDA "
                "libraries to link the CUDA kernels against; install a CUDA build of torch, or build CPU-only "
                "with FASTMASK_CUDA=0."
            )
        return True, f"on (FASTMASK_CUDA=1, {home})"
    if home is None:
        return False, "off (no nvcc found; set CUDA_HOME or FASTMASK_CUDA=1 to require it)"
    if torch.version.cuda is None:
        return False, "off (this torch is a CPU-only build)"
    return True, f"on (nvcc found in {home})"


WITH_CUDA, CUDA_REASON = want_cuda()
CUDA_VERSION = cuda_version(find_nvcc()) if WITH_CUDA else None


def package_version():
    """0.1.0 for the default (CUDA 13) wheel; +cu12 for a CUDA 12 build, +cpu for a CPU-only one.
    No torch in the tag: the op libraries serve every torch from TORCH_TARGET on."""
    if "sdist" in sys.argv:
        return BASE_VERSION
    if not WITH_CUDA:
        return BASE_VERSION + "+cpu"
    major = int(CUDA_VERSION.split(".")[0]) if CUDA_VERSION[0].isdigit() else None
    return BASE_VERSION if major == DEFAULT_CUDA_MAJOR else f"{BASE_VERSION}+cu{major}"


def write_build_info(package_dir, archs):
    """<package_dir>/_build_info.py: what the op libraries were built for, readable without
    loading anything (so that errors can name both sides)."""
    info = {
        "version": package_version(),
        "torch_target": f"{TORCH_TARGET[0]}.{TORCH_TARGET[1]}",
        "built_with_torch": torch.__version__,
        "with_cuda": WITH_CUDA,
        "cuda_version": CUDA_VERSION,
        "cuda_archs": archs or None,
    }
    os.makedirs(package_dir, exist_ok=True)
    with open(os.path.join(package_dir, "_build_info.py"), "w") as f:
        f.write('"""Written by setup.py at build time; do not edit."""\n')
        for key, value in info.items():
            f.write(f"{key} = {value!r}\n")


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", pattern), recursive=True))


def build_extensions():
    torch_support = check_torch_release()
    debug = os.environ.get("FASTMASK_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    strip = [] if debug else ["-Wl,--strip-debug"]  # release builds ship no debug information
    # -ffp-contract=off: no contracted multiply-adds, so results equal torchvision's bit for bit;
    # -fopenmp-simd: the kernels' `omp simd` loops (threads are torch's, through the stable ABI).
    op_cxx = opt + ["-ffp-contract=off", "-fopenmp-simd", "-fvisibility=hidden",
                    f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"]
    # Every symbol an op library needs must be defined by libtorch's stable C API (or CUDA's).
    op_link = strip + ["-Wl,--no-undefined"]
    cpp = sources("**/*.cpp")
    cuda_bindings = [s for s in cpp if s.endswith("_cuda_ops.cpp")]
    # csrc/<op>/<op>.cpp: an op's tensor-level code, shared by the CPU and CUDA registrations.
    shared_bindings = [s for s in cpp if os.path.basename(os.path.dirname(s)) + ".cpp" == os.path.basename(s)]
    module = ["csrc/python_module.cpp"]
    cpu_sources = [s for s in cpp if s not in cuda_bindings + module]

    archs = ""
    extensions = [
        cpp_extension.CppExtension(
            name=OP_LIBRARIES[0], sources=cpu_sources, include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": op_cxx}, extra_link_args=op_link, py_limited_api=True,
        )
    ]
    module_macros = [("FASTMASK_TORCH_TARGET", f'"{TORCH_TARGET[0]}.{TORCH_TARGET[1]}"')]
    if WITH_CUDA:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        # -fmad=false: no contracted multiply-adds, so device arithmetic equals the CPU kernels'.
        nvcc = (["-O0", "-G", "-g"] if debug else ["-O3", "-lineinfo"]) + ["-fmad=false"]
        extensions.append(
            cpp_extension.CUDAExtension(
                name=OP_LIBRARIES[1], sources=shared_bindings + cuda_bindings + sources("**/*.cu"),
                include_dirs=[os.path.join(ROOT, "csrc")], define_macros=[("USE_CUDA", None)],
                extra_compile_args={"cxx": op_cxx, "nvcc": nvcc}, extra_link_args=op_link, py_limited_api=True,
            )
        )
        module_macros += [("FASTMASK_WITH_CUDA", None), ("FASTMASK_CUDA_VERSION", f'"{CUDA_VERSION}"'),
                          ("FASTMASK_CUDA_ARCHS", f'"{archs}"')]
    # pybind11's headers come with torch's; _C uses nothing else of torch.
    extensions.append(
        Extension(
            name="fastmask._C", sources=module, include_dirs=[cpp_extension.include_paths()[0]],
            define_macros=module_macros, extra_compile_args=opt + ["-fvisibility=hidden"], extra_link_args=strip,
            libraries=["dl"], language="c++",
        )
    )

    print("=" * 72)
    print("fastmask build configuration")
    print(f"  torch               {torch.__version__} (CUDA {torch.version.cuda}): {torch_support}")
    print(f"  CUDA kernels        {CUDA_REASON}" + (f", CUDA {CUDA_VERSION}" if WITH_CUDA else ""))
    print(f"  TORCH_CUDA_ARCH_LIST {archs or '-'}")
    print(f"  MAX_JOBS            {os.environ.get('MAX_JOBS', '(ninja default)')}")
    print(f"  debug               {debug}")
    print(f"  op library sources  {len(cpu_sources)} CPU" + (f", {len(extensions[1].sources)} CUDA" if WITH_CUDA else ""))
    print(f"  version             {package_version()} (requires torch>={TORCH_TARGET[0]}.{TORCH_TARGET[1]})")
    print("=" * 72, flush=True)
    return archs, extensions


class BuildExtension(cpp_extension.BuildExtension):
    """Names the op libraries fastmask/lib/libfastmask_ops*.so (shared libraries loaded with
    dlopen, not Python modules), and writes fastmask/_build_info.py next to them: into the build
    tree for wheels, and into the source tree for in-place and editable builds."""

    def get_ext_filename(self, fullname):
        # Called with the full dotted name, or (distutils' get_ext_fullpath) its last part only.
        if any(fullname == lib or fullname == lib.rsplit(".", 1)[1] for lib in OP_LIBRARIES):
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def run(self):
        if self.inplace:  # the op libraries' folder holds no Python package for setuptools to create
            os.makedirs(os.path.join(ROOT, "fastmask", "lib"), exist_ok=True)
        super().run()
        dirs = [os.path.join(self.build_lib, "fastmask")]
        if self.inplace or getattr(self, "editable_mode", False):
            dirs.append(os.path.join(ROOT, "fastmask"))
        for d in dirs:
            write_build_info(d, ARCHS)


ARCHS, EXTENSIONS = build_extensions()
setup(
    version=package_version(),
    packages=find_packages(include=["fastmask", "fastmask.*"]),
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)

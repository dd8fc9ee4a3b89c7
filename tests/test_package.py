"""The package around the kernels: build facts, the stable ABI of the op libraries, install errors
(raised at op-call time), error classes across the ABI, diagnostics."""
import glob
import importlib
import os
import struct
import subprocess
import sys
import types

import pytest
import torch

import fastmask
from fastmask import _loader


def test_extension_reports_how_it_was_built():
    ext = fastmask._C
    info = _loader.build_info()
    assert ext.torch_target == info.torch_target == "2.11"
    assert info.with_cuda == ext.with_cuda
    # No torch in the version: one build serves every torch from 2.11 on.
    assert "torch" not in fastmask.__version__
    if ext.with_cuda:
        major = ext.cuda_version.split(".")[0]
        assert ext.cuda_archs and info.cuda_archs == ext.cuda_archs
        assert fastmask.__version__ == ("0.1.0" if major == "13" else f"0.1.0+cu{major}")
    else:
        assert fastmask.__version__ == "0.1.0+cpu"
    for op in ("roi_align", "roi_align_backward", "multi_level_roi_align", "multi_level_roi_align_backward",
               "nms", "paste_masks_in_image"):
        assert hasattr(torch.ops.fastmask, op)


def test_tested_package_is_the_installed_one():
    # scripts/test.sh (and so CI) sets this when it runs the suite against the installed wheel.
    if os.environ.get("FASTMASK_EXPECT_INSTALLED") != "1":
        pytest.skip("running against a source tree, not an installed wheel")
    assert "site-packages" in fastmask.__file__, fastmask.__file__
    assert "site-packages" in fastmask._C.__file__, fastmask._C.__file__
    assert os.path.exists(_loader.library_path("libfastmask_ops"))
    import shutil

    # What users install must work without build tools.
    assert not any(shutil.which(tool) for tool in ("nvcc", "gcc", "g++", "c++", "cc")), os.environ.get("PATH")
    assert "CUDA_HOME" not in os.environ


def undefined_dynamic_symbols(path):
    """The undefined symbols of an ELF64 little-endian shared library's .dynsym (no tools needed)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not an ELF64 little-endian file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    dynsym = next(s for s in sections if s[1] == 11)  # SHT_DYNSYM
    strtab = sections[dynsym[6]]  # sh_link: its string table
    names = []
    for offset in range(dynsym[4], dynsym[4] + dynsym[5], dynsym[9]):
        st_name, _, _, st_shndx = struct.unpack_from("<IBBH", data, offset)
        if st_name and st_shndx == 0:  # SHN_UNDEF
            start = strtab[4] + st_name
            names.append(data[start:data.index(b"\0", start)].decode())
    return names


def test_op_libraries_use_only_torchs_stable_abi():
    """What makes one build load under every torch from 2.11 on: from libtorch the op libraries
    import only the stable C API (aoti_torch_* and torch_* functions), no C++ symbol of c10, ATen or
    torch, whose mangled names and layouts change between releases."""
    libraries = glob.glob(os.path.join(_loader.LIBRARY_DIR, "libfastmask_ops*.so"))
    assert libraries, _loader.LIBRARY_DIR
    for library in libraries:
        symbols = undefined_dynamic_symbols(library)
        assert "torch_call_dispatcher" in symbols  # the parser sees what it should
        cxx_torch = [s for s in symbols if s.startswith(("_ZN3c10", "_ZNK3c10", "_ZN2at", "_ZNK2at", "_ZN5torch",
                                                          "_ZNK5torch", "_ZN8pybind11", "Py"))]
        assert not cxx_torch, f"{os.path.basename(library)} imports non-stable symbols: {cxx_torch[:10]}"


def test_argument_errors_keep_their_class():
    """Across the stable ABI only IndexError keeps its class: value and type errors reach Python as a
    RuntimeError whose message starts with the class name, and fastmask's wrappers raise the class."""
    x, rois = torch.rand(1, 2, 8, 8), torch.tensor([[0, 1.0, 1, 5, 5]])
    with pytest.raises(RuntimeError, match=r"^ValueError: fastmask\.roi_align: spatial_scale must be finite"):
        torch.ops.fastmask.roi_align(x, rois, -1.0, 2, 2, 2, True, False)
    with pytest.raises(ValueError, match=r"^fastmask\.roi_align: spatial_scale must be finite"):
        fastmask.ops.roi_align(x, rois, 2, spatial_scale=-1.0)
    with pytest.raises(RuntimeError, match=r"^TypeError: fastmask\.nms: scores must be floating point"):
        torch.ops.fastmask.nms(torch.rand(3, 4), torch.arange(3), 0.5)
    with pytest.raises(IndexError, match=r"rois\[0, 0\] \(batch index\) is 3"):
        torch.ops.fastmask.roi_align(x, torch.tensor([[3, 1.0, 1, 5, 5]]), 1.0, 2, 2, 2, True, False)


def test_missing_extension_says_how_to_build(monkeypatch):
    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(fastmask.FastmaskBuildError, match="(?s)not built.*pip install --no-build-isolation -e"):
        _loader.load_extension()


def test_unloadable_op_library_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(_loader, "LIBRARY_DIR", str(tmp_path))
    with pytest.raises(fastmask.FastmaskBuildError, match="(?s)cannot load its op library.*libfastmask_ops.so.*Reinstall"):
        _loader.load_extension()


def test_torch_older_than_the_target_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.10.0+cu128")
    loaded = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name: loaded.append(name) or real(name))
    with pytest.raises(fastmask.FastmaskBuildError, match=r"torch 2\.10\.0\+cu128 is too old.*torch>=2\.11"):
        _loader.load_extension()
    assert "fastmask._C" not in loaded


def test_old_torch_keeps_import_working_and_raises_at_call():
    code = (
        "import warnings, torch\n"
        "torch.__version__ = '2.10.0'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastmask\n"
        "assert any('too old' in str(x.message) for x in w)\n"
        "try:\n"
        "    fastmask.ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2)\n"
        "except fastmask.FastmaskBuildError as e:\n"
        "    print('RAISED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "RAISED fastmask: torch 2.10.0 is too old" in out


@pytest.mark.parametrize(
    "built,running,expected",
    [
        ("13.0", "12.8", r"built for CUDA 13 \(13\.0\).*uses CUDA 12\.8.*fastmask's CUDA 12 build \(version 0\.1\.0\+cu12\)"),
        ("12.9", "13.0", r"built for CUDA 12 \(12\.9\).*the default fastmask wheel \(pip install fastmask\) \(CUDA 13\)"),
        ("13.0", None, r"CPU-only build, so it has no CUDA"),
    ],
)
def test_cuda_library_is_loaded_only_for_the_same_cuda_major(monkeypatch, built, running, expected):
    calls = []
    ext = types.SimpleNamespace(with_cuda=True, cuda_version=built, load_library=calls.append)
    monkeypatch.setattr(torch.version, "cuda", running)
    reason = _loader.load_cuda(ext)
    assert reason is not None and calls == []  # never loaded: it could not work with this torch
    import re

    assert re.search(expected, reason), reason
    if running is not None:
        assert "CPU kernels work" in reason


def test_cuda_library_loads_for_the_same_major(monkeypatch):
    calls = []
    ext = types.SimpleNamespace(with_cuda=True, cuda_version="13.0", load_library=calls.append)
    monkeypatch.setattr(torch.version, "cuda", "13.2")
    assert _loader.load_cuda(ext) is None
    assert calls == [_loader.library_path("libfastmask_ops_cuda")]


def test_cuda_calls_explain_themselves_where_cuda_cannot_run(monkeypatch):
    # Every op has a CUDA kernel: fastmask's, or (this machine, when the CUDA library is not
    # loaded) one that raises the recorded reason instead of the dispatcher's "could not run".
    for op in ("roi_align", "nms", "multi_image_nms", "generate_proposals", "paste_masks_in_image"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastmask::{op}", "CUDA")
    monkeypatch.setitem(_loader._state, "cuda_error", "fastmask: the reason")
    with pytest.raises(fastmask.FastmaskBuildError, match="the reason"):
        _loader.check_device(torch.device("cuda", 0))


def test_gpu_without_kernels_raises_at_call(monkeypatch):
    fake_ext = types.SimpleNamespace(with_cuda=True, cuda_archs="9.0")
    monkeypatch.setitem(_loader._state, "ext", fake_ext)
    monkeypatch.setitem(_loader._state, "cuda_error", None)
    monkeypatch.setattr(_loader, "_checked_devices", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Fake A100")
    with pytest.raises(fastmask.FastmaskBuildError, match="Fake A100 is sm_80.*9.0.*TORCH_CUDA_ARCH_LIST=\"8.0\""):
        _loader.check_device(torch.device("cuda", 0))
    _loader.check_device(torch.device("cpu"))


def test_cuda_tensor_in_cpu_only_build_raises_at_call(monkeypatch):
    ext = types.SimpleNamespace(with_cuda=False)
    monkeypatch.setitem(_loader._state, "ext", ext)
    monkeypatch.setitem(_loader._state, "cuda_error", _loader.load_cuda(ext))
    with pytest.raises(fastmask.FastmaskBuildError, match="CPU-only build"):
        _loader.check_device(torch.device("cuda", 0))


def test_collect_env_runs_and_names_the_build():
    out = subprocess.run([sys.executable, "-m", "fastmask.collect_env"], capture_output=True, text=True, check=True).stdout
    assert "fastmask runs on torch >=" in out and "2.11" in out
    assert "fastmask build" in out and "built with torch" in out
    assert "roi_align (CPU" in out


@pytest.mark.parametrize(
    "archs,cap,ok,expected",
    [
        ("8.0;8.6;8.9;9.0+PTX", (9, 0), True, "yes (compiled"),
        ("8.0;8.6;8.9;9.0+PTX", (10, 0), True, "yes (PTX"),
        ("9.0", (8, 0), False, "NO"),
        ("8.0", (8, 6), True, "yes (compiled"),  # sm_80 machine code runs on sm_86
        ("8.6", (8, 0), False, "NO"),
    ],
)
def test_arch_coverage(archs, cap, ok, expected):
    covered, text = _loader.arch_coverage(archs, cap)
    assert covered == ok and text.startswith(expected)

"""The package around the kernels: build facts, install errors (raised at op-call time), diagnostics."""
import importlib
import os
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
    assert ext.torch_version.split("+")[0] == torch.__version__.split("+")[0]
    assert info.torch_version == ext.torch_version and info.with_cuda == ext.with_cuda
    assert fastmask.__version__.startswith("0.1.0+torch" + _loader.torch_release(torch.__version__))
    if ext.with_cuda:
        assert ext.cuda_archs and ext.cuda_version and fastmask.__version__.endswith(".cu" + torch.version.cuda.replace(".", ""))
    for op in ("roi_align", "roi_align_backward", "multi_level_roi_align", "multi_level_roi_align_backward"):
        assert hasattr(torch.ops.fastmask, op)


def test_tested_package_is_the_installed_one():
    # scripts/test.sh (and so CI) sets this when it runs the suite against the installed wheel.
    if os.environ.get("FASTMASK_EXPECT_INSTALLED") != "1":
        pytest.skip("running against a source tree, not an installed wheel")
    assert "site-packages" in fastmask.__file__, fastmask.__file__
    assert "site-packages" in fastmask._C.__file__, fastmask._C.__file__
    import shutil

    # What users install must work without build tools.
    assert not any(shutil.which(tool) for tool in ("nvcc", "gcc", "g++", "c++", "cc")), os.environ.get("PATH")
    assert "CUDA_HOME" not in os.environ


def test_missing_extension_says_how_to_build(monkeypatch):
    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(fastmask.FastmaskBuildError, match="(?s)not built.*pip install --no-build-isolation -e"):
        _loader.load_extension()


def test_undefined_symbol_points_at_a_torch_mismatch(monkeypatch):
    real = importlib.import_module

    def fail(name):
        if name == "fastmask._C":
            raise ImportError("_C.so: undefined symbol: _ZN3c104impl8GPUTrace")
        return real(name)

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(fastmask.FastmaskBuildError, match="built against another PyTorch"):
        _loader.load_extension()


def test_other_torch_release_is_refused_before_loading(monkeypatch):
    loaded = []
    fake_info = types.SimpleNamespace(torch_version="1.13.1+cu117")

    def import_module(name):
        if name == "fastmask._build_info":
            return fake_info
        loaded.append(name)
        raise AssertionError("a mismatched _C must not be loaded")

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(fastmask.FastmaskBuildError, match=r"built for torch 1\.13\.1\+cu117, but torch .* is running"):
        _loader.load_extension()
    assert loaded == []


def test_version_mismatch_keeps_import_working_and_raises_at_call():
    # A real mismatch cannot be set up here; pretend the running torch is another release.
    code = (
        "import warnings, torch\n"
        "torch.__version__ = '2.9.0+cu126'\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastmask\n"
        "assert any('built for torch' in str(x.message) for x in w)\n"
        "try:\n"
        "    fastmask.ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2)\n"
        "except fastmask.FastmaskBuildError as e:\n"
        "    print('RAISED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "RAISED fastmask: this fastmask was built for torch" in out
    assert "but torch 2.9.0+cu126 is running" in out


def test_gpu_without_kernels_raises_at_call(monkeypatch):
    fake_ext = types.SimpleNamespace(with_cuda=True, cuda_archs="9.0")
    monkeypatch.setitem(_loader._state, "ext", fake_ext)
    monkeypatch.setattr(_loader, "_checked_devices", {})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Fake A100")
    with pytest.raises(fastmask.FastmaskBuildError, match="Fake A100 is sm_80.*9.0.*TORCH_CUDA_ARCH_LIST=\"8.0\""):
        _loader.check_device(torch.device("cuda", 0))
    _loader.check_device(torch.device("cpu"))


def test_cuda_tensor_in_cpu_only_build_raises_at_call(monkeypatch):
    monkeypatch.setitem(_loader._state, "ext", types.SimpleNamespace(with_cuda=False))
    with pytest.raises(fastmask.FastmaskBuildError, match="CPU-only build"):
        _loader.check_device(torch.device("cuda", 0))


def test_collect_env_runs_and_names_the_build():
    out = subprocess.run([sys.executable, "-m", "fastmask.collect_env"], capture_output=True, text=True, check=True).stdout
    assert "fastmask built against torch" in out
    assert "fastmask build" in out and "+torch" in out
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

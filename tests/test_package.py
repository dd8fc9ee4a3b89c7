"""The package around the kernels: build facts, import errors, diagnostics."""
import importlib
import subprocess
import sys
import types

import pytest
import torch

import fastmask
from fastmask import _loader


def test_extension_reports_how_it_was_built():
    ext = fastmask._C
    assert ext.torch_version.split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(ext.with_cuda, bool)
    if ext.with_cuda:
        assert ext.cuda_archs and ext.cuda_version
    for op in ("roi_align", "roi_align_backward", "multi_level_roi_align", "multi_level_roi_align_backward"):
        assert hasattr(torch.ops.fastmask, op)


def test_missing_extension_says_how_to_build(monkeypatch):
    def fail(name):
        raise ImportError("No module named 'fastmask._C'")

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(fastmask.FastmaskBuildError, match="(?s)not built.*pip install --no-build-isolation -e"):
        _loader.load_extension()


def test_undefined_symbol_points_at_a_torch_mismatch(monkeypatch):
    def fail(name):
        raise ImportError("_C.so: undefined symbol: _ZN3c104impl8GPUTrace")

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(fastmask.FastmaskBuildError, match="built against another PyTorch"):
        _loader.load_extension()


def test_other_torch_release_is_refused_with_both_versions(monkeypatch):
    fake = types.SimpleNamespace(torch_version="1.13.1+cu117")
    monkeypatch.setattr(importlib, "import_module", lambda name: fake)
    with pytest.raises(fastmask.FastmaskBuildError, match=r"built against torch 1\.13\.1\+cu117 but torch .* is running"):
        _loader.load_extension()


def test_collect_env_runs_and_names_the_build():
    out = subprocess.run([sys.executable, "-m", "fastmask.collect_env"], capture_output=True, text=True, check=True).stdout
    assert "fastmask built against torch" in out
    assert "fastmask CUDA kernels" in out
    assert "roi_align" in out


@pytest.mark.parametrize(
    "archs,cap,expected",
    [
        ("8.0;8.6;8.9;9.0+PTX", (9, 0), "yes (compiled"),
        ("8.0;8.6;8.9;9.0+PTX", (10, 0), "yes (PTX"),
        ("9.0", (8, 0), "NO"),
        ("8.0", (8, 6), "yes (compiled"),  # sm_80 cubins run on sm_86
    ],
)
def test_arch_coverage(archs, cap, expected):
    from fastmask.collect_env import _arch_covered

    assert _arch_covered(archs, *cap).startswith(expected)

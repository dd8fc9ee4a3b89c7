"""Runs torchvision's own op tests against fastmask's drop-ins.

    python scripts/torchvision_conformance.py PATH/TO/torchvision/test/test_ops.py [-v] [--json OUT]

PATH is torchvision's test/test_ops.py (with the common_utils.py it imports beside it, and
optests_failures_dict.json), as in torchvision's repository; none of it is kept here. Its
TestRoIAlign, TestMultiScaleRoIAlign and TestNMS classes run twice on the CPU, each time in a
fresh pytest process: once as they are, once with torchvision's roi_align, RoIAlign,
MultiScaleRoIAlign, nms and batched_nms replaced by fastmask's everywhere the tests reach them
(the torchvision.ops attributes and the torchvision.ops.roi_align / poolers / boxes modules, so
torchvision's own helpers such as _batched_nms_vanilla call fastmask's nms too), and with the
opcheck tests torchvision generates checking the fastmask ops the tests call. It prints how
many tests pass on torchvision, which of those fail with fastmask, and exits 1 if any does.

This file is also the pytest plugin of those runs (``-p torchvision_conformance``): it registers
the markers torchvision's conftest registers, skips CUDA/MPS tests without the device, keeps
each test from leaking the RNG state (as torchvision's conftest), swaps the ops when
FASTMASK_CONFORMANCE_SWAP=1, and records every test's outcome in FASTMASK_CONFORMANCE_REPORT.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

import pytest

CLASSES = ("TestRoIAlign", "TestMultiScaleRoIAlign", "TestNMS")
SWAP_ENV = "FASTMASK_CONFORMANCE_SWAP"
REPORT_ENV = "FASTMASK_CONFORMANCE_REPORT"


# --- the pytest plugin ---------------------------------------------------------------------------

def swap_in_fastmask():
    """Puts fastmask's ops wherever torchvision's tests (and torchvision's own helpers) look them up."""
    import importlib

    import torchvision.ops

    import fastmask.ops

    replacements = {
        "torchvision.ops": ("roi_align", "RoIAlign", "MultiScaleRoIAlign", "nms", "batched_nms"),
        "torchvision.ops.roi_align": ("roi_align", "RoIAlign"),
        "torchvision.ops.poolers": ("roi_align", "MultiScaleRoIAlign"),
        "torchvision.ops.boxes": ("nms", "batched_nms"),
    }
    for module_name, names in replacements.items():
        module = importlib.import_module(module_name) if module_name != "torchvision.ops" else torchvision.ops
        for name in names:
            if not hasattr(module, name):
                raise RuntimeError(f"torchvision_conformance: {module_name}.{name} does not exist any more")
            setattr(module, name, getattr(fastmask.ops, name))


def check_fastmask_ops_too():
    """The opcheck tests torchvision generates (schema, autograd registration, fake tensor, AOT
    dispatch) intercept the ops of its namespace; with the swap they check fastmask's ops too."""
    import torch.testing._internal.optests as optests

    generate = optests.generate_opcheck_tests

    def generate_for_fastmask_too(testcase, namespaces, *args, **kwargs):
        return generate(testcase, list(namespaces) + ["fastmask"], *args, **kwargs)

    optests.generate_opcheck_tests = generate_for_fastmask_too


def pytest_configure(config):
    for marker in ("needs_cuda", "needs_mps", "opcheck_only_one", "dont_collect"):
        config.addinivalue_line("markers", f"{marker}: torchvision's test marker")
    if os.environ.get(SWAP_ENV) == "1":  # before the test module is imported
        swap_in_fastmask()
        check_fastmask_ops_too()


def pytest_collection_modifyitems(items):
    import torch

    mps = getattr(torch.backends, "mps", None)
    available = {"needs_cuda": torch.cuda.is_available(), "needs_mps": mps is not None and mps.is_available()}
    for item in items:
        for marker, present in available.items():
            if item.get_closest_marker(marker) is not None and not present:
                item.add_marker(pytest.mark.skip(reason=f"{marker[6:].upper()} device not available"))


@pytest.fixture(autouse=True)
def prevent_leaking_rng():
    import numpy as np
    import torch

    torch_state, builtin_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_rng_state(torch_state)
    random.setstate(builtin_state)
    np.random.set_state(numpy_state)


_outcomes = {}


def pytest_runtest_logreport(report):
    # A test's outcome is its call's, unless setup or teardown failed; skips count as skipped.
    if report.when == "call" or report.outcome != "passed":
        if _outcomes.get(report.nodeid) in (None, "passed"):
            _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w") as f:
            json.dump(_outcomes, f, indent=1, sort_keys=True)


# --- the driver ----------------------------------------------------------------------------------

def run_tests(test_file, swap, verbose):
    """Runs the three classes in a fresh process; returns {test id: outcome}."""
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "outcomes.json")
        env = dict(os.environ, **{SWAP_ENV: "1" if swap else "0", REPORT_ENV: report})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        env.setdefault("CUDA_VISIBLE_DEVICES", "")  # the CPU tests: as on a machine without a GPU
        command = [sys.executable, "-m", "pytest", "-p", "torchvision_conformance", "--noconftest",
                   "-p", "no:cacheprovider", "-q" if verbose else "-qq", "--tb=line" if verbose else "--tb=no",
                   "-W", "ignore", "--rootdir", os.path.dirname(os.path.abspath(test_file))]
        command += [f"{os.path.abspath(test_file)}::{c}" for c in CLASSES]
        subprocess.run(command, env=env, cwd=tmp, stdout=None if verbose else subprocess.DEVNULL, check=False)
        if not os.path.exists(report):
            sys.exit(f"torchvision_conformance: pytest wrote no report ({' '.join(command)})")
        with open(report) as f:
            return {nodeid.split("::", 1)[1]: outcome for nodeid, outcome in json.load(f).items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test_file", help="torchvision's test/test_ops.py")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument("--json", help="write both runs' outcomes to this file")
    args = parser.parse_args(argv)

    torchvision_run = run_tests(args.test_file, swap=False, verbose=args.verbose)
    fastmask_run = run_tests(args.test_file, swap=True, verbose=args.verbose)
    passed = sorted(t for t, outcome in torchvision_run.items() if outcome == "passed")
    failing = [t for t in passed if fastmask_run.get(t) != "passed"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torchvision": torchvision_run, "fastmask": fastmask_run}, f, indent=1, sort_keys=True)

    print(f"classes: {', '.join(CLASSES)} of {args.test_file}")
    for name, run in (("torchvision", torchvision_run), ("fastmask", fastmask_run)):
        counts = {}
        for outcome in run.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        print(f"  {name:12s} " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
    print(f"pass on torchvision: {len(passed)}; of those, fail with fastmask: {len(failing)}")
    for t in failing:
        print(f"  {t}: {fastmask_run.get(t, 'not run')}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())

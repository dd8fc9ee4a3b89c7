"""CPU paths under pytest-benchmark, torchvision beside fastmask:

    pytest benchmarks/bench_cpu.py --benchmark-only --benchmark-group-by=param:case
"""
import pytest
import torch

from compare import all_cases

CASES = all_cases(torch.device("cpu"))
IDS = [f"{c.op} | {c.workload}" for c in CASES]


@pytest.mark.parametrize("impl", ["torchvision", "fastmask"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cpu(benchmark, case, impl):
    benchmark.group = f"{case.op} | {case.workload}"
    fn = case.torchvision if impl == "torchvision" else case.fastmask
    with torch.enable_grad() if "backward" in case.op else torch.no_grad():
        benchmark.pedantic(fn, rounds=3, warmup_rounds=1)

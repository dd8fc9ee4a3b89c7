import pytest
import torch
import torch.jit._builtins

# A torch bug (2.11 to 2.15 at least), worked around here so the suite's TorchScript tests cannot fail
# at random: TorchScript's builtin table maps id(op) to an op's name and keeps no reference to the op.
# When a library adds an overload to an op whose packet exists, torch refreshes the packet and frees
# the old op (Inductor's first import of torch.ao.quantization.fx._decomposed does it to two ops);
# a later object at the freed address (a convolution's padding tuple) then reads as a builtin, and
# torch.jit.script fails with "builtin cannot be used as a value". CI hit it once (torch 2.11 stage,
# test_model_script.py after test_inference.py's torch.compile tests). Keeping every registered op
# alive keeps every id in the table valid; test_contract.py checks that this holds.
KEPT_BUILTINS = []
_register_builtin = torch.jit._builtins._register_builtin


def _register_builtin_and_keep_it(fn, op):
    KEPT_BUILTINS.append(fn)
    _register_builtin(fn, op)


torch.jit._builtins._register_builtin = _register_builtin_and_keep_it

import fastmask  # noqa: E402, F401  (loads the ops)

try:  # optional: fastmask's ops do not need it (torchvision may have no release yet for a new torch)
    import torchvision
except ImportError:
    torchvision = None

HAS_CUDA = torch.cuda.is_available() and fastmask._C.with_cuda
# Tests that need torchvision (to compare with it, or for what extends it: fastmask.models,
# fastmask.ops.GeneralizedRCNNTransform and RegionProposalNetwork): @needs_torchvision, or for a whole
# module pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError).
NO_TORCHVISION = f"needs torchvision (it has no release for torch {torch.__version__} yet)"
needs_torchvision = pytest.mark.skipif(torchvision is None, reason=NO_TORCHVISION)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of fastmask")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture
def seed(request):
    """A fresh seed per test, printed so a failure can be reproduced."""
    s = torch.randint(0, 2**31 - 1, (1,)).item()
    torch.manual_seed(s)
    print(f"seed={s}")
    return s


def random_rois(num, batch, height, width, scale=1.0, dtype=torch.float32, spread=1.3, device="cpu"):
    """Boxes in image coordinates (feature size / scale), some partly outside the map."""
    h, w = height / scale, width / scale
    x1 = (torch.rand(num) * spread - (spread - 1) / 2) * w
    y1 = (torch.rand(num) * spread - (spread - 1) / 2) * h
    bw = torch.rand(num) * w * 0.6
    bh = torch.rand(num) * h * 0.6
    b = torch.randint(0, batch, (num,)).float()
    return torch.stack([b, x1, y1, x1 + bw, y1 + bh], 1).to(dtype=dtype, device=device)


def assert_static_matches_eager(static, eager):
    """forward_static's padded outputs hold, per image, the rows eager forward returns: same
    count (at least one), boxes and scores within float rounding, equal labels."""
    for b, ref in enumerate(eager):
        valid = static["valid"][b]
        assert int(valid.sum()) == len(ref["boxes"]) > 0
        torch.testing.assert_close(static["boxes"][b][valid], ref["boxes"])
        torch.testing.assert_close(static["scores"][b][valid], ref["scores"])
        assert torch.equal(static["labels"][b][valid], ref["labels"])

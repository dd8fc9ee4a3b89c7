import pytest
import torch

import fastmask  # noqa: F401  (loads the ops)

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

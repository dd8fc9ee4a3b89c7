"""Fixture of the C++ test test_exported_model.cpp (run by ctest, see CMakeLists.txt): exports a
tiny Mask R-CNN (ResNet-18-FPN, random weights, 128 x 128, batch 2) with ``fastmask export`` into
``OUT/model.pt2`` and writes ``OUT/inputs.pt`` ([images, image_sizes]) and ``OUT/expected.pt``
(eager ``StaticMaskRCNN`` outputs in the package's output order) for the C++ program to compare.

    python cpp_test/make_exported_model.py OUT TORCH_VERSION

Needs fastmask (its ops) and a C++ compiler (AOTInductor), and the torch that the C++ test links:
a package is tied to the torch release that compiled it, so TORCH_VERSION (CMake's Torch_VERSION)
must match this interpreter's torch.
"""
import os
import sys
import time

import torch

from fastmask.cli import main as fastmask_main
from fastmask.engine import save_checkpoint
from fastmask.models import maskrcnn_resnet_fpn
from fastmask.models.export import StaticMaskRCNN

OUTPUTS = ("boxes", "scores", "labels", "masks", "valid")  # the package's "outputs" metadata
# box_score_thresh=0 so that random weights detect: every output row is a detection.
CONFIG = {"arch": "resnet18", "num_classes": 4,
          "kwargs": {"min_size": 128, "max_size": 128, "box_score_thresh": 0.0, "rpn_pre_nms_top_n_test": 200,
                     "rpn_post_nms_top_n_test": 100, "box_detections_per_img": 20}}


def main(out_dir: str, torch_version: str) -> int:
    if torch.__version__.split("+")[0] != torch_version.split("+")[0]:
        print(f"make_exported_model.py: this Python has torch {torch.__version__} but the C++ test links "
              f"torch {torch_version}; a .pt2 package runs only with the torch that compiled it. Pass "
              f"-DFASTMASK_EXPORT_TEST_PYTHON=<a python with torch {torch_version} and fastmask>.", file=sys.stderr)
        return 1
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    model = maskrcnn_resnet_fpn(CONFIG["arch"], weights_backbone=None, num_classes=CONFIG["num_classes"],
                                **CONFIG["kwargs"]).eval()
    checkpoint = os.path.join(out_dir, "checkpoint.pth")
    save_checkpoint(checkpoint, model, CONFIG)
    start = time.perf_counter()
    status = fastmask_main(["export", "--checkpoint", checkpoint, "--out", os.path.join(out_dir, "model.pt2"),
                            "--batch", "2", "--size", "128", "128"])
    print(f"make_exported_model.py: exported and compiled in {time.perf_counter() - start:.0f} s")
    if status:
        return status

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=g)
    images[1, :, 96:] = 0  # the second image is 96 x 128, zero-padded
    image_sizes = torch.tensor([[128, 128], [96, 128]])
    with torch.no_grad():
        expected = StaticMaskRCNN(model)(images, image_sizes)
    if not bool(expected["valid"].all()):
        print("make_exported_model.py: the eager model left rows invalid; the test would compare padding",
              file=sys.stderr)
        return 1
    torch.save([images, image_sizes], os.path.join(out_dir, "inputs.pt"))
    torch.save([expected[name] for name in OUTPUTS], os.path.join(out_dir, "expected.pt"))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))

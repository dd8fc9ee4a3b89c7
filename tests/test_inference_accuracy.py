"""optimize_for_inference's accuracy: bf16 + channels_last and int8 detections against float32's, in
COCO AP (pycocotools) and box by box. README's "Fast inference" table is the full-size version (a
trained model, 500 held-out images)."""
import pytest
import torch
from torch.utils.data import Dataset

from conftest import NO_TORCHVISION

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

from torchvision.ops import box_iou  # noqa: E402

from fastmask.data import SyntheticShapes  # noqa: E402
from fastmask.engine import evaluate  # noqa: E402
from fastmask.models import optimize_for_inference  # noqa: E402
from test_inference import needs_compiler, small_model  # noqa: E402

TOP = 10  # float32's leading detections per image that the fast model must find again


class Float32Detections(Dataset):
    """The images, with a float32 model's top detections as their ground truth (masks thresholded
    at 0.5, as evaluate() does for the detections it scores)."""

    classes = ("background", "a", "b", "c")

    def __init__(self, images, outputs):
        self.items = []
        for i, (image, out) in enumerate(zip(images, outputs)):
            target = {"image_id": torch.tensor(i), "boxes": out["boxes"][:TOP], "labels": out["labels"][:TOP],
                      "masks": (out["masks"][:TOP, 0] >= 0.5).to(torch.uint8)}
            self.items.append((image, target))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def detections_found(reference, outputs):
    """(found, box error, score error): how many of the reference's top detections per image the
    outputs have too (same label, IoU > 0.9), and the largest box (pixels) and score differences
    among those."""
    box_error, score_error, found = 0.0, 0.0, 0
    for r, o in zip(reference, outputs):
        for box, label, score in zip(r["boxes"][:TOP], r["labels"][:TOP], r["scores"][:TOP]):
            overlaps = torch.where(o["labels"] == label, box_iou(box[None], o["boxes"])[0], 0)
            j = int(overlaps.argmax())
            if overlaps[j] > 0.9:
                found += 1
                box_error = max(box_error, float((o["boxes"][j] - box).abs().max()))
                score_error = max(score_error, float((o["scores"][j] - score).abs()))
    return found, box_error, score_error


def test_bf16_channels_last_detections_match_float32():
    """bf16 + channels_last against float32 on 4 synthetic images, with float32's top detections as
    the ground truth: COCO box and mask AP, and box by box. The model has random weights (training
    one here would take minutes), so its mask probabilities lie near 0.5 and thresholding them is
    fragile: mask AP is the most sensitive measure. Seen (AMX CPU): float32 against itself box and
    mask AP 0.99; bf16 box AP 0.95, mask AP 0.80, boxes within 0.23 px, 36 of 40 found. With the
    final boxes decoded in bf16 (RoIHeads' box_coder fed bf16 deltas and proposals): box AP 0.91,
    mask AP 0.57, 0.55 px, 34 found; with only the decoded boxes rounded to bf16: mask AP 0.63,
    0.34 px."""
    pytest.importorskip("pycocotools")
    model = small_model()
    fast = optimize_for_inference(model, torch.bfloat16, channels_last=True)
    data = SyntheticShapes(4, (64, 96), seed=1)
    images = [data[i][0] for i in range(len(data))]
    with torch.no_grad():
        reference, outputs = model(images), fast(images)
    truth = Float32Detections(images, reference)

    own = evaluate(model, truth)
    assert own["bbox_AP"] > 0.98 and own["segm_AP"] > 0.98
    metrics = evaluate(fast, truth)
    assert metrics["bbox_AP"] >= 0.9 and metrics["segm_AP"] >= 0.7, metrics

    found, box_error, score_error = detections_found(reference, outputs)
    assert found >= 0.8 * TOP * len(images)
    assert box_error <= 0.4  # pixels, in images of 64 x 96
    assert score_error <= 0.05


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=[pytest.mark.slow, needs_compiler])])
def test_int8_detections_match_float32(compiled):
    """int8 (backbone and FPN quantized, calibrated on 8 other synthetic images; heads in bf16)
    against float32, as the bf16 test above. Uncompiled (needs no C++ compiler; seconds): the
    quantized values in float32 arithmetic. Compiled (slow): oneDNN's int8 convolutions, whose
    outputs and the additions between them are bf16 (int8-mixed-bf16), which rounds more.
    Random weights quantize far worse than trained ones: the README's trained synthetic-shapes
    model is within 0.003 of float32's box and mask AP in int8, compiled. Seen (AMX CPU):
    uncompiled box AP 0.84, mask AP 0.37, 29 of 40 found, boxes within 0.72 px, scores within
    0.11 (with ATen's default kernels and 1 thread: 0.83, 0.31, 31, 0.92 px, 0.13; oneDNN limited
    to AVX2: 0.78, 0.36, 30, 0.74 px, 0.11); compiled 0.65, 0.40, 25, 0.67 px, 0.12."""
    pytest.importorskip("pycocotools")
    pytest.importorskip("torchao")
    model = small_model()
    calibration = SyntheticShapes(8, (64, 96), seed=0)
    fast = optimize_for_inference(model, torch.int8, compile=compiled,
                                  calibration=[calibration[i][0] for i in range(len(calibration))])
    data = SyntheticShapes(4, (64, 96), seed=1)
    images = [data[i][0] for i in range(len(data))]
    with torch.no_grad():
        reference, outputs = model(images), fast(images)
    metrics = evaluate(fast, Float32Detections(images, reference))
    assert metrics["bbox_AP"] >= 0.55 and metrics["segm_AP"] >= 0.2, metrics
    found, box_error, score_error = detections_found(reference, outputs)
    assert found >= 0.55 * TOP * len(images)
    assert box_error <= 1.5  # pixels, in images of 64 x 96
    assert score_error <= 0.2

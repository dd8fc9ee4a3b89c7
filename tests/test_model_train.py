"""Data, training, checkpoints, evaluation, prediction, the CLI and DDP on tiny problems."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import NO_TORCHVISION

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
torchvision = pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

from fastmask.cli import main  # noqa: E402
from fastmask.data import SyntheticShapes, to_coco  # noqa: E402
from fastmask.engine import TrainConfig, build_model, evaluate, load_checkpoint, train  # noqa: E402

# A model small enough to train a few steps in seconds.
TINY = {"min_size": 64, "max_size": 64, "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
        "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 16}
TINY_ARGS = ["--arch", "resnet18", "--image-size", "64", "--min-size", "64", "--max-size", "64"] + [
    a for k, v in TINY.items() if k not in ("min_size", "max_size") for a in ("--model-arg", f"{k}={v}")]


def test_synthetic_shapes():
    data = SyntheticShapes(6, (64, 80), seed=3)
    image, target = data[2]
    again, target_again = SyntheticShapes(6, (64, 80), seed=3)[2]
    assert torch.equal(image, again) and torch.equal(target["masks"], target_again["masks"])
    assert not torch.equal(image, SyntheticShapes(6, (64, 80), seed=4)[2][0])
    for i in range(len(data)):
        image, t = data[i]
        assert image.shape == (3, 64, 80) and image.dtype == torch.float32
        n = len(t["labels"])
        assert t["boxes"].shape == (n, 4) and t["masks"].shape == (n, 64, 80) and t["masks"].dtype == torch.uint8
        assert ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
        assert t["masks"].sum(0).max() <= 1  # occlusion: every pixel belongs to at most one instance
        for box, mask in zip(t["boxes"].int().tolist(), t["masks"]):
            x1, y1, x2, y2 = box
            assert mask[y1:y2, x1:x2].sum() == mask.sum()  # the box encloses the mask ...
            assert mask[y1].any() and mask[y2 - 1].any() and mask[:, x1].any() and mask[:, x2 - 1].any()  # tightly
    with pytest.raises(ValueError, match="num_images"):
        SyntheticShapes(0)
    with pytest.raises(IndexError):
        data[6]


def test_coco_dataset_reads_what_to_coco_writes(tmp_path):
    pytest.importorskip("pycocotools")
    from PIL import Image

    from fastmask.data import CocoDetection

    data = SyntheticShapes(3, 48, seed=5)
    coco = to_coco(data)
    for info in coco["images"]:
        image = data[info["id"]][0]
        Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / info["file_name"])
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    loaded = CocoDetection(str(tmp_path), str(tmp_path / "ann.json"))
    assert len(loaded) == 3 and loaded.classes == data.classes
    for i in range(3):
        image, t = loaded[i]
        ref_image, ref = data[i]
        torch.testing.assert_close(image, ref_image, atol=1 / 255, rtol=0)
        assert torch.equal(t["masks"], ref["masks"]) and torch.equal(t["labels"], ref["labels"])
        torch.testing.assert_close(t["boxes"], ref["boxes"])
    with pytest.raises(FileNotFoundError, match="annotation_file"):
        CocoDetection(str(tmp_path), str(tmp_path / "missing.json"))


class GroundTruth(nn.Module):
    """A "model" that returns a data set's ground truth, in the order evaluate() asks for it."""

    def __init__(self, dataset):
        super().__init__()
        self.targets = iter([dataset[i][1] for i in range(len(dataset))])

    def forward(self, images):
        out = []
        for _ in images:
            t = next(self.targets)
            out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
                        "masks": t["masks"][:, None].float()})
        return out


def test_evaluate_ground_truth_scores_one():
    pytest.importorskip("pycocotools")
    data = SyntheticShapes(5, 64, seed=2)
    metrics = evaluate(GroundTruth(data), data)
    assert set(metrics) == {f"{t}_AP{s}" for t in ("bbox", "segm") for s in ("", "50", "75")}
    for value in metrics.values():
        assert value == pytest.approx(1.0)


def test_train_checkpoint_resume(tmp_path):
    data = SyntheticShapes(8, 64, seed=0)
    config = TrainConfig(arch="resnet18", num_classes=4, model_kwargs=TINY, iterations=2, batch_size=2, warmup=1,
                         out_dir=str(tmp_path), log_every=1, checkpoint_every=1, progress=False,
                         classes=list(data.classes))
    first = train(config, data)
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert checkpoint["iteration"] == 2
    config.iterations = 3
    resumed = train(config, data)  # continues from the checkpoint: one more step
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert not torch.equal(first.roi_heads.box_predictor.cls_score.weight, resumed.roi_heads.box_predictor.cls_score.weight)
    model, saved, state = load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert state["iteration"] == 3 and saved["classes"] == list(data.classes)
    torch.testing.assert_close(model.state_dict(), resumed.state_dict())


def test_train_step_amp_bfloat16(tmp_path):
    data = SyntheticShapes(2, 64, seed=1)
    config = TrainConfig(arch="resnet18", num_classes=4, model_kwargs=TINY, iterations=1, batch_size=2, warmup=1,
                         out_dir=str(tmp_path), log_every=1, progress=False, amp=True)
    train(config, data)
    (record,) = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor(record["loss"]))


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "bench"):
        assert command in out
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    out = subprocess.run([sys.executable, "-m", "fastmask", "--help"], capture_output=True, text=True, check=True).stdout
    assert "predict" in out
    if os.environ.get("FASTMASK_EXPECT_INSTALLED"):  # the wheel installs the console script
        script = shutil.which("fastmask")
        assert script, "the fastmask console script is not on PATH"
        assert "predict" in subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout


def test_cli_train_evaluate_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--num-images", "4", "--iterations", "2", "--batch-size", "2", "--warmup", "1",
                 "--out", str(run), "--no-progress"]) == 0
    assert (run / "checkpoint.pth").is_file() and (run / "log.jsonl").is_file()
    pytest.importorskip("pycocotools")
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pth"), "--num-images", "2", "--image-size", "64",
                 "--json", str(tmp_path / "ap.json")]) == 0
    assert "segm_AP50" in json.loads((tmp_path / "ap.json").read_text())
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "checkpoint.pth"), "--num-images", "2", "--image-size", "64",
                 "--out", str(out), "--score-threshold", "0"]) == 0
    pngs = sorted(os.listdir(out))
    assert pngs == ["shapes-0000.png", "shapes-0001.png"]
    from PIL import Image

    with Image.open(out / pngs[0]) as img:
        assert img.size == (64, 64)


def test_cli_predict_with_torchvision_checkpoint(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy()).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "tv.pth"), str(image), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "in.png").is_file()
    model, config, _ = load_checkpoint(str(tmp_path / "tv.pth"))
    assert config["num_classes"] == 3 and config["arch"] == "resnet50"
    with pytest.raises(ValueError, match="neither"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "junk.pth")
        load_checkpoint(str(tmp_path / "junk.pth"))


def test_torchvision_pretrained_style_checkpoint_gives_torchvision_outputs(tmp_path):
    # torchvision's pretrained Mask R-CNN uses FrozenBatchNorm2d with eps 0 in the backbone.
    from torchvision.models.detection import mask_rcnn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    for m in body.modules():
        if isinstance(m, FrozenBatchNorm2d):  # non-trivial statistics, so eps and the layer type matter
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.1)
    tv = mask_rcnn.MaskRCNN(_resnet_fpn_extractor(body, 3), num_classes=3, min_size=64, max_size=96,
                            box_score_thresh=0.0)
    mask_rcnn.overwrite_eps(tv, 0.0)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model, _, _ = load_checkpoint(str(tmp_path / "tv.pth"), {"kwargs": {"min_size": 64, "max_size": 96,
                                                                          "box_score_thresh": 0.0}})
    image = torch.rand(3, 60, 80)
    with torch.no_grad():
        ref, ours = tv.eval()([image])[0], model.eval()([image])[0]
    for key in ("boxes", "labels", "scores", "masks"):
        assert torch.equal(ours[key], ref[key]), key


def test_build_model_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg16", 3)


def test_ddp_two_processes_gloo(tmp_path):
    # torchrun with 2 CPU processes (gloo): each trains on its share of the data; rank 0 logs.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastmask",
           "train", *TINY_ARGS, "--num-images", "8", "--iterations", "2", "--batch-size", "1", "--warmup", "1",
           "--out", str(tmp_path), "--log-every", "1", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2]  # one writer
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["iteration"] == 2


def test_cli_bench(monkeypatch, capsys):
    import fastmask.engine.bench as bench

    full_size = bench.model_pair
    monkeypatch.setattr(bench, "model_pair", lambda **kw: full_size(min_size=64, max_size=64, num_classes=3, **kw))
    assert main(["bench", "--device", "cpu", "--sizes", "48x64", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "images whose detections differ: 0" in out


def test_a_process_without_batches_fails_clearly():
    # Under DDP a process gets about len(dataset) / world_size images: fewer than one batch must
    # be an error, not an endless loop over an empty loader.
    from torch.utils.data import DataLoader

    from fastmask.engine.train import _batches

    loader = DataLoader(list(range(3)), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="no batch"):
        next(_batches(loader, 0))

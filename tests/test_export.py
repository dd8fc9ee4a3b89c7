"""``fastmask export``: forward_static through torch.export and AOTInductor into one .pt2 package,
run in a fresh process with only ``import fastmask`` (the ops), compared with the eager model."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import NO_TORCHVISION

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

from fastmask.cli import main  # noqa: E402
from fastmask.engine import save_checkpoint  # noqa: E402
from fastmask.models import maskrcnn_resnet_fpn  # noqa: E402
from fastmask.models.export import StaticMaskRCNN, export_program, export_static, load_package  # noqa: E402


def has_cxx_compiler() -> bool:
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        return False
    return True

# box_score_thresh=0 so that the random weights detect: every row of the outputs is a detection.
CONFIG = {"arch": "resnet18", "num_classes": 4,
          "kwargs": {"min_size": 128, "max_size": 128, "box_score_thresh": 0.0, "rpn_pre_nms_top_n_test": 200,
                     "rpn_post_nms_top_n_test": 100, "box_detections_per_img": 20}}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return maskrcnn_resnet_fpn(CONFIG["arch"], weights_backbone=None, num_classes=CONFIG["num_classes"],
                               **CONFIG["kwargs"]).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=g)
    images[1, :, 96:] = 0  # the second image is 96 x 128, zero-padded
    return images, torch.tensor([[128, 128], [96, 128]])


# The package is run in a fresh interpreter that imports fastmask's ops but none of the model code.
RUNNER = textwrap.dedent("""
    import sys
    import torch
    import fastmask
    package, inputs, outputs = sys.argv[1:]
    images, image_sizes = torch.load(inputs)
    runner = torch._inductor.aoti_load_package(package)
    with torch.no_grad():
        out = runner(images, image_sizes)
        # With AOTI_RUNTIME_CHECK_INPUTS=1 another size is refused (without it, it would run, reading
        # out of bounds). torch 2.14 says why in the error; torch 2.11 only on stderr.
        try:
            runner(images[:, :, :96], image_sizes)
        except RuntimeError:
            pass
        else:
            raise AssertionError("a 96-row batch ran")
    metadata = runner.get_metadata()
    assert metadata["images"] == "uint8[2, 3, 128, 128]", metadata
    assert metadata["outputs"] == "boxes,scores,labels,masks,valid", metadata
    assert metadata["freezing"] == "True", metadata
    loaded = sorted(m for m in sys.modules if m.startswith(("torchvision", "fastmask.models", "fastmask.engine")))
    assert not loaded, loaded
    torch.save(out, outputs)
""")


# AOTInductor compiles C++ (about a minute on 2 cores); the wheel's test run has no compiler.
@pytest.mark.slow
@pytest.mark.skipif(not has_cxx_compiler(), reason="AOTInductor needs a C++ compiler (none on PATH)")
def test_exported_package_runs_without_model_code_and_matches_eager(model, tmp_path):
    checkpoint, package = str(tmp_path / "checkpoint.pth"), str(tmp_path / "model.pt2")
    save_checkpoint(checkpoint, model, CONFIG)
    assert main(["export", "--checkpoint", checkpoint, "--out", package, "--batch", "2", "--size", "128", "128",
                 "--freeze"]) == 0  # frozen here; the C++ ctest runs an unfrozen package
    images, image_sizes = inputs()
    torch.save((images, image_sizes), tmp_path / "inputs.pt")
    subprocess.run([sys.executable, "-c", RUNNER, package, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                   check=True, env={**os.environ, "AOTI_RUNTIME_CHECK_INPUTS": "1"})
    out = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        ref = StaticMaskRCNN(model)(images, image_sizes)
    assert set(out) == set(ref) == {"boxes", "scores", "labels", "masks", "valid"}
    assert bool(ref["valid"].all())
    # Inductor fuses and reorders the networks' float32 arithmetic (e.g. batch norm, softmax), so
    # values differ by rounding; selections (labels, which rows are valid) are the same.
    assert torch.equal(out["labels"], ref["labels"]) and torch.equal(out["valid"], ref["valid"])
    torch.testing.assert_close(out["boxes"], ref["boxes"], rtol=0, atol=1e-3)
    torch.testing.assert_close(out["scores"], ref["scores"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["masks"], ref["masks"], rtol=0, atol=1e-3)
    # The padded image's boxes are clipped to its 96 rows.
    assert float(out["boxes"][1, :, 3].max()) <= 96

    # The same package as the eager model (load_package: tests/test_export_package.py tests it
    # exactly around the uncompiled program), within the rounding above.
    images = [images[0].float() / 255, images[1, :, :96].float() / 255]
    with torch.no_grad():
        ref = model(images)
    for o, r in zip(load_package(package)(images), ref):
        assert torch.equal(o["labels"], r["labels"])
        torch.testing.assert_close(o["boxes"], r["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(o["scores"], r["scores"], rtol=0, atol=1e-5)
        torch.testing.assert_close(o["masks"], r["masks"], rtol=0, atol=1e-3)


def test_exported_program_with_pasted_masks_equals_eager(model):
    # Not compiled (the exported graph runs the same kernels): exact.
    images, image_sizes = inputs()
    program = export_program(model, 2, (128, 128), paste=True)
    with torch.no_grad():
        out = program.module()(images, image_sizes)
        ref = model.forward_static(images.float() / 255, image_sizes)
    assert out["masks"].shape == (2, 20, 128, 128)
    for b in range(2):
        pasted = torch.ops.fastmask.paste_masks_in_image(ref["masks"][b][:, None], ref["boxes"][b], 128, 128, 1, None)
        assert torch.equal(out["masks"][b], pasted[:, 0])
    for key in ("boxes", "scores", "labels", "valid"):
        assert torch.equal(out[key], ref[key]), key


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_exported_low_precision_program_equals_optimized_eager(model, precision):
    # --precision exports optimize_for_inference's model: networks in bf16/fp16, boxes, scores and
    # masks still float32. Not compiled, so exact.
    from fastmask.models.inference import PRECISIONS, optimize_for_inference

    images, image_sizes = inputs()
    program = export_program(model, 2, (128, 128), precision=precision)
    fast = optimize_for_inference(model, PRECISIONS[precision], channels_last=False)
    with torch.no_grad():
        out = program.module()(images, image_sizes)
        ref = StaticMaskRCNN(fast)(images, image_sizes)
    assert out["boxes"].dtype == out["scores"].dtype == out["masks"].dtype == torch.float32
    for key in ("boxes", "scores", "labels", "masks", "valid"):
        assert torch.equal(out[key], ref[key]), key


def test_export_arguments_are_checked(model):
    with pytest.raises(ValueError, match="multiples of 32"):
        export_static(model, 1, (100, 128))
    with pytest.raises(ValueError, match="batch must be >= 1"):
        export_static(model, 0, (128, 128))
    with pytest.raises(ValueError, match="precision must be one of"):
        export_static(model, 1, (128, 128), precision="int8")
    with pytest.raises(TypeError, match="fastmask MaskRCNN"):
        export_static(torch.nn.Linear(2, 2), 1, (128, 128))


@pytest.mark.parametrize("max_size, side", [(128, 128), (100, 128)])
def test_cli_export_default_size_holds_any_resized_image(tmp_path, monkeypatch, max_size, side):
    import fastmask.models.export

    calls = []
    monkeypatch.setattr(fastmask.models.export, "export_static",
                        lambda *args, **kwargs: calls.append((args, kwargs)) or args[-1])
    config = {**CONFIG, "kwargs": {**CONFIG["kwargs"], "min_size": 64, "max_size": max_size}}
    checkpoint = str(tmp_path / "checkpoint.pth")
    save_checkpoint(checkpoint, maskrcnn_resnet_fpn("resnet18", num_classes=4, **config["kwargs"]), config)
    assert main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path / "m.pt2"), "--precision", "bf16",
                 "--paste"]) == 0
    assert main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path / "m.pt2"), "--freeze"]) == 0
    ((model, batch, size, precision, paste, path), kwargs), (frozen_args, frozen_kwargs) = calls
    assert (batch, list(size), precision, paste, path) == (1, [side, side], "bf16", True, str(tmp_path / "m.pt2"))
    assert kwargs == {"inductor_configs": None} and frozen_kwargs == {"inductor_configs": {"freezing": True}}

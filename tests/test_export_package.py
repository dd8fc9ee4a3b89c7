"""``PackagedMaskRCNN``: an exported package called like the eager model (``MaskRCNN.forward`` in
eval mode), for ``fastmask evaluate/predict --package``. Tested around the uncompiled
``export_program(...).module()`` (no compiler needed: the compiled package's own rounding is
tested in test_export.py)."""
import pytest
import torch

from conftest import NO_TORCHVISION

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

from fastmask.cli import main  # noqa: E402
from fastmask.models import maskrcnn_resnet_fpn  # noqa: E402
from fastmask.models.export import PackagedMaskRCNN, _quantize, export_program, package_metadata  # noqa: E402

from test_export import CONFIG  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return maskrcnn_resnet_fpn(CONFIG["arch"], weights_backbone=None, num_classes=CONFIG["num_classes"],
                               **CONFIG["kwargs"]).eval()


def packaged(model, batch=2, paste=False):
    program = export_program(model, batch, (128, 128), paste=paste)
    return PackagedMaskRCNN(program.module(), package_metadata(model, batch, (128, 128), paste=paste))


def bytes_image(g, h, w, block=1):
    """A [3, h, w] image of multiples of 1/255 (as a decoded 8-bit image), constant on block x block squares."""
    small = torch.randint(0, 256, (3, h // block, w // block), generator=g, dtype=torch.uint8)
    return small.repeat_interleave(block, 1).repeat_interleave(block, 2).float() / 255


def assert_equal_detections(out, ref):
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert set(o) == set(r) == {"boxes", "scores", "labels", "masks"}
        assert len(r["boxes"]) > 0
        for key in r:
            assert o[key].dtype == r[key].dtype and torch.equal(o[key], r[key]), key


def test_quantize_is_exact_on_multiples_of_1_255():
    k = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(_quantize(k.float() / 255), k)
    assert torch.equal(_quantize(torch.tensor([-0.1, 0.5 / 255 + 1e-6, 1.2])), torch.tensor([0, 1, 255], dtype=torch.uint8))


def test_packaged_model_equals_eager_without_resizing(model):
    # 128 x 128 and 96 x 128 with min_size = max_size = 128: not resized. Three images on a batch
    # of two: the second call holds one blank image whose outputs are dropped.
    g = torch.Generator().manual_seed(2)
    images = [bytes_image(g, 128, 128), bytes_image(g, 96, 128), bytes_image(g, 128, 96)]
    with torch.no_grad():
        ref = model(images)
    out = packaged(model)(images)
    assert_equal_detections(out, ref)
    assert out[1]["masks"].shape[-2:] == (96, 128) and out[2]["masks"].shape[-2:] == (128, 96)


def test_packaged_model_equals_eager_when_halving(model):
    # 256 x 256 and 256 x 192 are resized by exactly 1/2 (to 128 x 128 and 128 x 96): on images
    # constant on 2 x 2 squares, bilinear halving averages equal values (exact in floats), so the
    # transform's resize of the normalised image and the package's resize-then-quantise agree, and
    # the rest (boxes scaled back by 2, masks pasted at 256 px) must be exactly the eager model's.
    g = torch.Generator().manual_seed(3)
    images = [bytes_image(g, 256, 256, block=2), bytes_image(g, 256, 192, block=2)]
    with torch.no_grad():
        ref = model(images)
    out = packaged(model)(images)
    assert_equal_detections(out, ref)
    assert out[1]["masks"].shape[-2:] == (256, 192)
    assert float(out[0]["boxes"].max()) > 128  # in the original's coordinates, not the network's


def test_packaged_model_with_any_resize_equals_eager_on_its_quantised_input(model, monkeypatch):
    # 80 x 104 and 304 x 200 are scaled by 1.23 and 0.42 (to 98 x 128 and 128 x 84). The package
    # takes uint8, so the wrapper resizes the [0, 1] image and rounds it to multiples of 1/255,
    # where the eager transform resizes the normalised float image: up to 0.5 / 255 a pixel apart,
    # which with random weights (near-tied scores, box_score_thresh=0) reorders and swaps
    # detections, so the eager model on the original images is no reference. It is on the
    # quantised resized images (which its transform does not resize again), with torchvision's
    # resize_boxes and paste_masks_in_image to map its detections (before its own postprocess:
    # 28 x 28 masks) to the original images.
    from torchvision.models.detection.roi_heads import paste_masks_in_image
    from torchvision.models.detection.transform import resize_boxes

    g = torch.Generator().manual_seed(4)
    images = [torch.rand(3, 80, 104, generator=g), torch.rand(3, 304, 200, generator=g)]
    resized_sizes = [(98, 128), (128, 84)]
    quantised = [(torch.nn.functional.interpolate(image[None], size, mode="bilinear")[0] * 255).round() / 255
                 for image, size in zip(images, resized_sizes)]
    out = packaged(model)(images)
    monkeypatch.setattr(model.transform, "postprocess", lambda result, *sizes: result)
    with torch.no_grad():
        ref = model(quantised)
    for o, r, image, size in zip(out, ref, images, resized_sizes):
        assert len(r["boxes"]) > 0
        boxes = resize_boxes(r["boxes"], list(size), list(image.shape[-2:]))
        assert torch.equal(o["boxes"], boxes)  # the same float32 operations
        assert torch.equal(o["scores"], r["scores"]) and torch.equal(o["labels"], r["labels"])
        assert o["masks"].shape == (len(boxes), 1) + tuple(image.shape[-2:])
        torch.testing.assert_close(o["masks"], paste_masks_in_image(r["masks"], boxes, image.shape[-2:]),
                                   rtol=0, atol=1e-5)
    assert float(out[1]["boxes"][:, 3].max()) > 128  # in the original's coordinates, not the network's


def test_packaged_model_with_pasted_masks_crops_them(model):
    g = torch.Generator().manual_seed(5)
    images = [bytes_image(g, 128, 128), bytes_image(g, 96, 128)]
    with torch.no_grad():
        ref = model(images)
    package = packaged(model, paste=True)
    out = package(images)
    for o, r in zip(out, ref):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(o[key], r[key]), key
        assert o["masks"].shape == r["masks"].shape
        torch.testing.assert_close(o["masks"], r["masks"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="paste=True"):
        package([bytes_image(g, 64, 64)])


def test_packaged_model_errors(model):
    package = packaged(model, batch=1)
    g = torch.Generator().manual_seed(6)
    # The same runner, told its canvas is 96 x 96: a 128 x 128 image (not resized) does not fit.
    small = PackagedMaskRCNN(package.runner, {**package.metadata, "height": "96", "width": "96"})
    with pytest.raises(ValueError, match=r"resized to \(128, 128\), which does not fit the package's \(96, 96\)"):
        small([bytes_image(g, 128, 128)])
    with pytest.raises(ValueError, match=r"images\[1\] must be a \[3, H, W\] tensor"):
        package([bytes_image(g, 128, 128), torch.zeros(1, 3, 128, 128)])
    with pytest.raises(TypeError, match="floating"):
        package([torch.zeros(3, 128, 128, dtype=torch.uint8)])
    with pytest.raises(TypeError, match="non-empty list"):
        package([])
    with pytest.raises(RuntimeError, match="inference only"):
        package.train()
    metadata = {k: v for k, v in package.metadata.items() if k != "min_size"}
    with pytest.raises(ValueError, match=r"lacks \['min_size'\]"):
        PackagedMaskRCNN(package.runner, metadata)


def test_cli_package_refuses_checkpoint_only_flags(tmp_path):
    for flags, message in ((["--precision", "bf16"], "--precision"), (["--channels-last"], "--channels-last"),
                           (["--arch", "resnet18"], "--arch")):
        with pytest.raises(SystemExit, match=message):
            main(["evaluate", "--package", str(tmp_path / "m.pt2"), *flags])
    with pytest.raises(SystemExit):
        main(["evaluate", "--package", "a.pt2", "--checkpoint", "b.pth"])  # one or the other (argparse)


def test_cli_evaluate_and_predict_with_package(model, tmp_path, monkeypatch):
    import fastmask.models.export

    loaded = []
    monkeypatch.setattr(fastmask.models.export, "load_package",
                        lambda path: loaded.append(path) or packaged(model))
    assert main(["evaluate", "--package", "m.pt2", "--num-images", "3", "--json", str(tmp_path / "m.json")]) == 0
    assert main(["predict", "--package", "m.pt2", "--num-images", "1", "--out", str(tmp_path / "pred")]) == 0
    assert loaded == ["m.pt2", "m.pt2"]
    with pytest.raises(SystemExit, match="runs on cpu"):
        main(["evaluate", "--package", "m.pt2", "--device", "meta"])
    assert (tmp_path / "m.json").exists() and (tmp_path / "pred" / "shapes-0000.png").exists()


def test_cli_package_device_check():
    from fastmask.cli import _same_device

    cuda, cuda0, cuda1, cpu = (torch.device(d) for d in ("cuda", "cuda:0", "cuda:1", "cpu"))
    assert _same_device(cuda, cuda0) and _same_device(cuda0, cuda) and _same_device(cpu, cpu)
    assert not _same_device(cuda0, cuda1) and not _same_device(cpu, cuda0)


@pytest.mark.parametrize("kwargs", [{"min_size": (96, 128), "max_size": 160}, {"min_size": 64, "max_size": 100},
                                    {"fixed_size": (120, 90)}])
def test_packaged_model_resizes_as_the_transform(kwargs):
    # The sizes the package resizes images to are the eval transform's (its last min_size,
    # max_size, fixed_size), read back from the metadata.
    model = maskrcnn_resnet_fpn("resnet18", weights_backbone=None, num_classes=4, **kwargs).eval()
    package = PackagedMaskRCNN(None, package_metadata(model, 1, (256, 256)))
    g = torch.Generator().manual_seed(7)
    images = [torch.rand(3, h, w, generator=g) for h, w in ((100, 200), (300, 90), (128, 128), (37, 41))]
    with torch.no_grad():
        expected = model.transform(images)[0].image_sizes
    assert [resized for _, resized in package._sizes(images)] == [tuple(s) for s in expected]

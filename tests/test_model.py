"""fastmask's Mask R-CNN against torchvision's: same weights, same images, same outputs and losses."""
import copy

import pytest
import torch

from conftest import NO_TORCHVISION, assert_static_matches_eager

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
torchvision = pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

import fastmask  # noqa: E402
from fastmask.models import MaskRCNN, RoIHeads, maskrcnn_resnet50_fpn, maskrcnn_resnet101_fpn  # noqa: E402

# Tiny images and few proposals keep the test fast; box_score_thresh=0 so random weights still detect.
SMALL = dict(weights=None, weights_backbone=None, num_classes=5, min_size=96, max_size=128, box_score_thresh=0.0,
             rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=200,
             rpn_post_nms_top_n_train=100, box_batch_size_per_image=64)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(**SMALL)
    fm = maskrcnn_resnet50_fpn(**SMALL)
    fm.load_state_dict(tv.state_dict())
    return tv, fm


@pytest.fixture(scope="module")
def reference_detections(models):
    """torchvision's eval-mode detections on images()."""
    tv, _ = models
    tv.eval()
    with torch.no_grad():
        return tv(images())


def images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 96, 128, generator=g), torch.rand(3, 80, 100, generator=g)]


def targets():
    out = []
    for h, w, boxes in ((96, 128, [[10, 12, 60, 70], [50, 40, 120, 90]]), (80, 100, [[5, 5, 40, 30]])):
        boxes = torch.tensor(boxes, dtype=torch.float32)
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
            m[y1:y2, x1:x2] = 1
        out.append({"boxes": boxes, "labels": torch.arange(1, len(boxes) + 1), "masks": masks})
    return out


def assert_same_detections(ref, ours):
    assert len(ref) == len(ours)
    for r, o in zip(ref, ours):
        assert set(r) == set(o) == {"boxes", "labels", "scores", "masks"}
        assert len(r["boxes"]) > 0
        # Bit for bit on every CPU: each component equals torchvision's (anchors, proposals with
        # torch's own exp, RoIAlign, NMS, and the resizes, which follow PyTorch's kernel choice and
        # rounding per CPU capability and thread count).
        for key in ("boxes", "labels", "scores", "masks"):
            assert torch.equal(o[key], r[key]), key


def test_same_modules_and_state_dict_keys(models):
    tv, fm = models
    assert isinstance(fm, torchvision.models.detection.MaskRCNN)
    assert list(fm.state_dict()) == list(tv.state_dict())
    assert [n for n, _ in fm.named_modules()] == [n for n, _ in tv.named_modules()]
    assert isinstance(fm.roi_heads, RoIHeads)
    assert isinstance(fm.roi_heads.box_roi_pool, fastmask.ops.MultiScaleRoIAlign)
    assert isinstance(fm.roi_heads.mask_roi_pool, fastmask.ops.MultiScaleRoIAlign)


def test_eval_detections_equal_torchvision(models, reference_detections):
    _, fm = models
    fm.eval()
    with torch.no_grad():
        assert_same_detections(reference_detections, fm(images()))


def test_train_losses_equal_torchvision(models):
    # Both models draw the same random numbers (the samplers' randperm) in the same order, so the
    # same seed gives the same sampled proposals and the same losses.
    losses = []
    for model in (copy.deepcopy(m).train() for m in models):  # copies: training updates BatchNorm statistics
        torch.manual_seed(123)
        losses.append(model(images(), targets()))
    ref, ours = losses
    assert set(ours) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key
    sum(ours.values()).backward()  # fastmask's RoIAlign backward runs through the model


def test_patch_torchvision_keeps_outputs(models, reference_detections):
    tv, _ = models
    patched = fastmask.patch_torchvision(copy.deepcopy(tv).eval())
    assert isinstance(patched.roi_heads, RoIHeads)
    assert isinstance(patched.roi_heads.box_roi_pool, fastmask.ops.MultiScaleRoIAlign)
    with torch.no_grad():
        assert_same_detections(reference_detections, patched(images()))
    with pytest.raises(TypeError, match="model"):
        fastmask.patch_torchvision(torch.nn.Linear(2, 2))


def test_patch_torchvision_swaps_in_fastmask_components(models, reference_detections, monkeypatch):
    # What happens once fastmask.ops provides the RPN, anchors and transform (issues 4 and 5):
    # patch_torchvision rebuilds them from the torchvision modules' settings, keeping the weights.
    from fastmask.models import _components
    from torchvision.models.detection import anchor_utils, rpn, transform

    swaps = {name: type(name, (base,), {}) for name, base in (
        ("RegionProposalNetwork", rpn.RegionProposalNetwork), ("AnchorGenerator", anchor_utils.AnchorGenerator),
        ("GeneralizedRCNNTransform", transform.GeneralizedRCNNTransform))}
    for name, cls in swaps.items():
        monkeypatch.setattr(_components, name, cls)
    tv, _ = models
    patched = fastmask.patch_torchvision(copy.deepcopy(tv).eval())
    assert type(patched.rpn) is swaps["RegionProposalNetwork"]
    assert type(patched.rpn.anchor_generator) is swaps["AnchorGenerator"]
    assert type(patched.transform) is swaps["GeneralizedRCNNTransform"] and not patched.transform.training
    assert patched.rpn._post_nms_top_n == tv.rpn._post_nms_top_n and patched.rpn.head is not None
    assert list(patched.state_dict()) == list(tv.state_dict())
    with torch.no_grad():
        assert_same_detections(reference_detections, patched(images()))


def test_patch_torchvision_faster_rcnn():
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    tv = torchvision.models.detection.FasterRCNN(backbone, num_classes=3, min_size=64, max_size=96,
                                                 box_score_thresh=0.0, rpn_post_nms_top_n_test=100).eval()
    patched = fastmask.patch_torchvision(copy.deepcopy(tv))
    assert isinstance(patched.roi_heads, RoIHeads) and patched.roi_heads.mask_roi_pool is None
    with torch.no_grad():
        ref, ours = tv(images()), patched(images())
    for r, o in zip(ref, ours):
        assert len(r["boxes"]) > 0 and torch.equal(r["labels"], o["labels"])
        assert torch.equal(o["boxes"], r["boxes"]) and torch.equal(o["scores"], r["scores"])


def test_patch_torchvision_keypoint_rcnn():
    # Keypoint models run torchvision's RoIHeads.forward (fastmask's own is for mask inference).
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    tv = torchvision.models.detection.KeypointRCNN(backbone, num_classes=2, num_keypoints=5, min_size=64, max_size=96,
                                                   box_score_thresh=0.0, rpn_post_nms_top_n_test=100).eval()
    patched = fastmask.patch_torchvision(copy.deepcopy(tv))
    assert isinstance(patched.roi_heads, RoIHeads) and patched.roi_heads.has_keypoint()
    with torch.no_grad():
        ref, ours = tv(images()), patched(images())
    for r, o in zip(ref, ours):
        assert list(o) == list(r) and "keypoints" in r and len(r["boxes"]) > 0
        for key in r:
            assert torch.equal(o[key], r[key]), key


def test_mask_inference_picks_the_class_before_the_sigmoid(models, reference_detections, monkeypatch):
    # In eval, RoIHeads.forward does the mask inference itself (torchvision's maskrcnn_inference,
    # the sigmoid of every class's logits, is not called); with targets given it is torchvision's
    # forward (which checks them). The detections are torchvision's either way.
    from torchvision.models.detection import roi_heads as tv_roi_heads
    _, fm = models
    fm.eval()
    calls = []
    inference = tv_roi_heads.maskrcnn_inference
    monkeypatch.setattr(tv_roi_heads, "maskrcnn_inference", lambda *args: calls.append(1) or inference(*args))
    with torch.no_grad():
        assert_same_detections(reference_detections, fm(images()))
        assert calls == []
        assert_same_detections(reference_detections, fm(images(), targets()))
    assert calls == [1]


def test_no_detections_gives_empty_outputs(models):
    _, fm = models
    fm.eval()
    strict = copy.deepcopy(fm)
    strict.roi_heads.score_thresh = 1.0
    with torch.no_grad():
        out = strict(images())
    assert [len(o["boxes"]) for o in out] == [0, 0]
    assert out[0]["masks"].shape == (0, 1, 96, 128)


def test_postprocess_without_proposals(models):
    heads = models[1].roi_heads
    boxes, scores, labels = heads.postprocess_detections(
        torch.zeros(0, 5), torch.zeros(0, 20), [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 64), (64, 64)])
    assert [b.shape for b in boxes] == [(0, 4), (0, 4)] and [len(s) for s in scores] == [0, 0]


def test_torchvision_checkpoint_loads_unchanged(models, tmp_path):
    tv, _ = models
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    fm = maskrcnn_resnet50_fpn(**SMALL)
    fm.load_state_dict(torch.load(path))  # strict


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "images must not be empty"),
    (torch.rand(1, 3, 32, 32), TypeError, "list"),
    ([torch.rand(32, 32)], ValueError, r"images\[0\] must be a \[3, H, W\]"),
    ([torch.rand(1, 32, 32)], ValueError, r"images\[0\] must be a \[3, H, W\]"),
    ([torch.rand(4, 32, 32)], ValueError, r"images\[0\] must be a \[3, H, W\]"),
    ([torch.zeros(3, 32, 32, dtype=torch.uint8)], TypeError, "floating point"),
])
def test_bad_images_raise(models, bad, error, match):
    _, fm = models
    fm.eval()
    with pytest.raises(error, match=match):
        fm(bad)


def test_bad_targets_raise(models):
    _, fm = models
    fm.train()
    with pytest.raises(ValueError, match="targets are required"):
        fm(images())
    with pytest.raises(ValueError, match="one dict per image"):
        fm(images(), targets()[:1])
    t = targets()
    t[0]["masks"] = t[0]["masks"][:1]
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\] must be \[N, H, W\] = \[2, 96, 128\]"):
        fm(images(), t)
    t = targets()
    t[1]["labels"] = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\]"):
        fm(images(), t)
    t = targets()
    del t[0]["masks"]
    with pytest.raises(ValueError, match="has no 'masks'"):
        fm(images(), t)


def test_fastmask_poolers_accepted():
    pool = fastmask.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    model = MaskRCNN(backbone, num_classes=3, box_roi_pool=pool)
    assert model.roi_heads.box_roi_pool is pool


def test_paper_preset():
    model = maskrcnn_resnet101_fpn(weights_backbone=None, num_classes=4).eval()
    assert len(model.backbone.body.layer3) == 23  # ResNet-101
    assert model.rpn.head.cls_logits.out_channels == 3  # anchors per location
    assert [s for (s,) in model.rpn.anchor_generator.sizes] == [32, 64, 128, 256, 512]
    assert model.rpn.nms_thresh == 0.7
    assert model.roi_heads.box_roi_pool.output_size == (7, 7)
    assert model.roi_heads.mask_roi_pool.output_size == (14, 14)
    # Short side 800, long side at most 1024, zero-padded to 1024 x 1024.
    batch, _ = model.transform([torch.rand(3, 480, 640), torch.rand(3, 600, 500)])
    assert batch.image_sizes == [(768, 1024), (960, 800)]
    assert batch.tensors.shape == (2, 3, 1024, 1024)
    assert batch.tensors[0, :, 768:].abs().max() == 0 and batch.tensors[1, :, :, 800:].abs().max() == 0
    with pytest.raises(ValueError, match="weights"):
        maskrcnn_resnet101_fpn(weights="COCO", weights_backbone=None)


def test_paper_preset_pools_with_fixed_scales():
    # On the square canvas inferred scales would double for images wider than ~1.4:1.
    model = maskrcnn_resnet101_fpn(weights_backbone=None, num_classes=4)
    for pool in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        assert pool.fixed_scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert model.roi_heads.mask_roi_pool.output_size == (14, 14)


def test_paper_preset_forward_small():
    # The preset at a small size: padding follows max_size; P2-P6 feed the RPN; 28 x 28 masks.
    model = maskrcnn_resnet101_fpn(weights_backbone=None, num_classes=4, min_size=64, max_size=128,
                                   box_score_thresh=0.0, rpn_post_nms_top_n_test=50).eval()
    batch, _ = model.transform([torch.rand(3, 60, 90)])
    assert batch.tensors.shape == (1, 3, 128, 128)
    features = model.backbone(batch.tensors)
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    with torch.no_grad():
        (out,) = model([torch.rand(3, 60, 90)])
    # (this random ResNet-101 in eval mode may propose nothing: then every output is empty)
    assert out["masks"].shape == (len(out["boxes"]), 1, 60, 90)
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4


def test_forward_static_pads_like_the_transform():
    # A 96 x 100 image on a zero-filled 96 x 128 canvas (image_sizes says where it ends) is the
    # batch forward's transform makes: normalised, then zero-padded. So the detections are the same.
    torch.manual_seed(0)
    model = fastmask.models.maskrcnn_resnet_fpn(
        "resnet18", num_classes=4, min_size=96, max_size=128, box_score_thresh=0.0, rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100, box_detections_per_img=20).eval()
    small, full = torch.rand(3, 96, 100), torch.rand(3, 96, 128)
    canvas = torch.zeros(2, 3, 96, 128)
    canvas[0, :, :, :100], canvas[1] = small, full
    with torch.no_grad():
        eager = model([small, full])
        static = model.forward_static(canvas, torch.tensor([[96, 100], [96, 128]]))
    assert_static_matches_eager(static, eager)


def test_forward_static_matches_forward_and_compiles():
    # Images already at the network's size (no resize, no padding): the valid rows of the static
    # outputs are forward's detections, and the masks pasted into the image are forward's masks.
    torch.manual_seed(0)
    model = fastmask.models.maskrcnn_resnet_fpn(
        "resnet18", num_classes=4, min_size=96, max_size=128, box_score_thresh=0.0, rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100, box_detections_per_img=20).eval()
    batch = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        eager = model(list(batch))
        static = model.forward_static(batch)
        compiled = torch.compile(model.forward_static, fullgraph=True, backend="eager")(batch)
    assert static["boxes"].shape == (2, 20, 4) and static["masks"].shape == (2, 20, 28, 28)
    assert_static_matches_eager(static, eager)
    for b, ref in enumerate(eager):
        valid = static["valid"][b]
        pasted = fastmask.models.paste_masks_in_image(
            static["masks"][b][valid][:, None], static["boxes"][b][valid], (96, 128))
        torch.testing.assert_close(pasted, ref["masks"])
    for key, value in static.items():
        torch.testing.assert_close(compiled[key], value)
    with pytest.raises(ValueError, match=r"images must be a \[B, 3, H, W\]"):
        model.forward_static(torch.rand(3, 96, 128))
    with pytest.raises(RuntimeError, match="eval"):
        model.train().forward_static(batch)


@pytest.mark.cuda
def test_cuda_forward_static_without_sync_and_graph_replay_equals_eager():
    # Real sizes (2 images 800 x 1344, torchvision's test settings), small random weights:
    # forward_static must not wait for the device, and must capture into a CUDA graph whose
    # replay on new images equals an eager call on them, bit for bit (the same kernels in the
    # same order; random weights score detections nearly alike, so any difference would reorder them).
    from fastmask.engine.bench import cuda_graph

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5, box_score_thresh=0.0)
    model = model.eval().cuda()
    images = torch.rand(2, 3, 800, 1344, device="cuda")
    with torch.no_grad():
        model.forward_static(images)  # first calls initialise cuDNN and cuBLAS, which may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            eager = model.forward_static(images)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        replay, captured = cuda_graph(lambda: model.forward_static(images))
        assert int(eager["valid"].sum()) > 0
        images.copy_(torch.rand(2, 3, 800, 1344))
        replay()
        reference = model.forward_static(images)
    assert set(captured) == set(reference) == {"boxes", "scores", "labels", "masks", "valid"}
    for key, value in reference.items():
        assert torch.equal(captured[key], value), key
    assert not torch.equal(captured["scores"], eager["scores"])  # the replay saw the new images


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_model_on_the_second_gpu():
    # The current device stays cuda:0: every op of the model (transform, anchors, proposals, NMS,
    # multi-level RoIAlign forward and backward, pasting) must run on its inputs' device.
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(**SMALL)
    first, second = torch.device("cuda", 0), torch.device("cuda", 1)
    on_first, on_second = copy.deepcopy(model).to(first).eval(), copy.deepcopy(model).to(second).eval()
    with torch.no_grad():
        ref = on_first([im.to(first) for im in images()])
        ours = on_second([im.to(second) for im in images()])
    assert ours[0]["boxes"].device == second
    assert_same_detections([{k: v.cpu() for k, v in r.items()} for r in ref],
                           [{k: v.cpu() for k, v in o.items()} for o in ours])
    on_second.train()
    torch.manual_seed(123)
    losses = on_second([im.to(second) for im in images()],
                       [{k: v.to(second) for k, v in t.items()} for t in targets()])
    sum(losses.values()).backward()
    grads = [p.grad for p in on_second.parameters() if p.grad is not None]
    assert grads and all(g.device == second and torch.isfinite(g).all() for g in grads)

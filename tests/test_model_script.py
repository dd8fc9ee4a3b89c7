"""TorchScript and torch.fx on fastmask's Mask R-CNN and its modules, against eager and torchvision.

A scripted GeneralizedRCNN returns ``(losses, detections)`` in both modes (torchvision's too)."""
import copy
import io
from typing import Dict, List, Tuple

import pytest
import torch
from torch import Tensor, nn

from conftest import NO_TORCHVISION

# fastmask.models (and so the engine, the CLI's commands, export) extends torchvision's models.
torchvision = pytest.importorskip("torchvision", reason=NO_TORCHVISION, exc_type=ImportError)

from torchvision.models.detection import anchor_utils, rpn as tv_rpn  # noqa: E402
from torchvision.models.detection import transform as tv_transform  # noqa: E402
from torchvision.models.detection._utils import BoxCoder as TvBoxCoder  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names  # noqa: E402

import fastmask  # noqa: E402
from fastmask.models import maskrcnn_resnet50_fpn  # noqa: E402
from fastmask.ops import (AnchorGenerator, BoxCoder, GeneralizedRCNNTransform, MultiScaleRoIAlign,  # noqa: E402
                          RegionProposalNetwork, decode_boxes, encode_boxes, generate_proposals, grid_anchors,
                          paste_masks_in_image)
from test_model import SMALL, assert_same_detections, images, targets  # noqa: E402

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning",
                                        "ignore:RCNN always returns a:UserWarning")
script = torch.jit.script


def assert_equal_structure(ours, ref):
    """Exactly equal tensors in the same nested lists / tuples / dicts."""
    if isinstance(ref, Tensor):
        assert torch.equal(ours, ref)
    elif isinstance(ref, dict):
        assert list(ours) == list(ref)
        for key in ref:
            assert_equal_structure(ours[key], ref[key])
    elif isinstance(ref, (list, tuple)):
        assert len(ours) == len(ref)
        for o, r in zip(ours, ref):
            assert_equal_structure(o, r)
    else:
        assert ours == ref


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = torchvision.models.detection.maskrcnn_resnet50_fpn(**SMALL).eval()
    fm = maskrcnn_resnet50_fpn(**SMALL).eval()
    fm.load_state_dict(tv.state_dict())
    return tv, fm


@pytest.fixture(scope="module")
def scripted(models):
    return tuple(script(m) for m in models)


def test_scripted_model_eval_equals_eager_and_torchvision(models, scripted):
    _, fm = models
    tv_scripted, fm_scripted = scripted
    with torch.no_grad():
        eager = fm(images())
        losses, detections = fm_scripted(images())
        _, reference = tv_scripted(images())
    assert losses == {}
    assert_equal_structure(detections, eager)
    assert_same_detections(reference, detections)


def test_scripted_model_forward_static_equals_eager(models, scripted):
    _, fm = models
    batch = images()[0][None]
    with torch.no_grad():
        assert_equal_structure(scripted[1].forward_static(batch), fm.forward_static(batch))


def test_scripted_model_train_losses_equal_eager_and_torchvision(models, scripted):
    # Copies: training updates the batch-norm statistics. The same seed draws the same samples.
    results = []
    for model in (copy.deepcopy(models[1]), copy.deepcopy(scripted[1]), copy.deepcopy(scripted[0])):
        model.train()
        torch.manual_seed(123)
        out = model(images(), targets())
        results.append(out if isinstance(out, dict) else out[0])
    eager, ours, reference = results
    assert set(ours) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert_equal_structure(ours, eager)
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-5, atol=1e-6)
    sum(ours.values()).backward()


def test_patch_torchvision_then_script():
    # A torchvision Mask R-CNN of another backbone, patched in place, scripted, saved and loaded.
    torch.manual_seed(0)
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    tv = torchvision.models.detection.MaskRCNN(backbone, num_classes=3, min_size=64, max_size=96,
                                               box_score_thresh=0.0, rpn_post_nms_top_n_test=50).eval()
    patched = fastmask.patch_torchvision(copy.deepcopy(tv))
    assert isinstance(patched.rpn, RegionProposalNetwork)
    buffer = io.BytesIO()
    torch.jit.save(script(patched), buffer)
    buffer.seek(0)
    with torch.no_grad():
        reference = tv(images())
        _, detections = torch.jit.load(buffer)(images())
    assert_same_detections(reference, detections)


@pytest.mark.parametrize("kind", ["FasterRCNN", "KeypointRCNN"])
def test_patch_torchvision_then_script_without_a_mask_branch(kind):
    # fastmask's RoIHeads.forward has mask code that TorchScript must drop where the mask modules
    # are None: patched Faster and Keypoint R-CNNs script and equal torchvision's.
    torch.manual_seed(0)
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    extra = {"num_keypoints": 5} if kind == "KeypointRCNN" else {}
    tv = getattr(torchvision.models.detection, kind)(backbone, num_classes=3, min_size=64, max_size=96,
                                                    box_score_thresh=0.0, rpn_post_nms_top_n_test=50, **extra).eval()
    scripted = script(fastmask.patch_torchvision(copy.deepcopy(tv)))
    with torch.no_grad():
        reference = tv(images())
        _, detections = scripted(images())
    assert len(detections) == len(reference)
    for r, o in zip(reference, detections):
        assert list(o) == list(r) and len(r["boxes"]) > 0
        for key in r:
            assert torch.equal(o[key], r[key]), key


def image_list_and_features(channels=8, levels=((16, 24), (8, 12))):
    g = torch.Generator().manual_seed(2)
    image_list = ImageList(torch.rand(2, 3, 64, 96, generator=g), [(64, 90), (60, 96)])
    features = {str(i): torch.randn(2, channels, h, w, generator=g) for i, (h, w) in enumerate(levels)}
    return image_list, features


def test_anchor_generator_scripts():
    sizes, ratios = ((32,), (64,)), ((0.5, 1.0, 2.0),) * 2
    ours, reference = AnchorGenerator(sizes, ratios), anchor_utils.AnchorGenerator(sizes, ratios)
    image_list, features = image_list_and_features()
    maps = list(features.values())
    anchors = script(ours)(image_list, maps)
    assert_equal_structure(anchors, ours(image_list, maps))
    assert_equal_structure(anchors, script(reference)(image_list, maps))


def rpn_pair():
    torch.manual_seed(0)
    args = (tv_rpn.RPNHead(8, 3), 0.7, 0.3, 64, 0.5, dict(training=100, testing=60), dict(training=50, testing=30), 0.7)
    anchors = (((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)
    reference = tv_rpn.RegionProposalNetwork(anchor_utils.AnchorGenerator(*anchors), *args)
    ours = RegionProposalNetwork(AnchorGenerator(*anchors), copy.deepcopy(args[0]), *args[1:])
    return reference, ours


def test_region_proposal_network_scripts():
    reference, ours = rpn_pair()
    image_list, features = image_list_and_features()
    ours_scripted, reference_scripted = script(ours).eval(), script(reference).eval()
    with torch.no_grad():
        proposals, losses = ours_scripted(image_list, features)
        expected, _ = reference_scripted(image_list, features)
    assert losses == {}
    assert_equal_structure(proposals, ours.eval()(image_list, features)[0])
    for p, e in zip(proposals, expected):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-4)  # fastmask's decode: within an ulp (README)

    gt = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]])}, {"boxes": torch.tensor([[0.0, 5.0, 30.0, 60.0]])}]
    results = []
    for model in (ours.train(), ours_scripted.train(), reference_scripted.train()):
        torch.manual_seed(5)
        results.append(model(image_list, features, gt)[1])
    assert_equal_structure(results[1], results[0])
    for key in results[2]:
        torch.testing.assert_close(results[1][key], results[2][key], rtol=1e-5, atol=1e-6)


def test_transform_scripts():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ours, reference = GeneralizedRCNNTransform(96, 128, mean, std), tv_transform.GeneralizedRCNNTransform(
        96, 128, mean, std)
    ours_scripted, reference_scripted = script(ours), script(reference)
    for mode in ("eval", "train"):
        results = []
        for model in (ours, ours_scripted, reference_scripted):
            getattr(model, mode)()
            torch.manual_seed(3)
            image_list, out_targets = model(images(), targets())
            results.append((image_list.tensors, image_list.image_sizes, out_targets))
        eager, scripted_out, expected = results
        assert_equal_structure(scripted_out, eager)
        torch.testing.assert_close(scripted_out[0], expected[0], rtol=0, atol=1e-5)
        assert scripted_out[1] == expected[1]
        assert_equal_structure(scripted_out[2], expected[2])


def test_roi_heads_scripts(models, scripted):
    tv, fm = models
    torch.manual_seed(4)
    features = {str(i): torch.randn(2, 256, 24 // 2**i, 32 // 2**i) for i in range(4)}
    features["pool"] = torch.randn(2, 256, 2, 2)
    xy = torch.rand(2, 10, 2) * torch.tensor([80.0, 60.0])
    proposals = list(torch.cat([xy, xy + 8 + torch.rand(2, 10, 2) * 40], dim=2).unbind(0))
    shapes = [(96, 128), (80, 100)]
    with torch.no_grad():
        detections, _ = script(fm.roi_heads)(features, proposals, shapes)
        reference, _ = script(tv.roi_heads)(features, proposals, shapes)
        assert_equal_structure(detections, fm.roi_heads(features, proposals, shapes)[0])
    for r, o in zip(reference, detections):
        assert torch.equal(r["labels"], o["labels"])
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(o[key], r[key], rtol=1e-5, atol=1e-5)


class BoxCoding(nn.Module):
    """Uses every BoxCoder method, as torchvision's modules do."""

    def __init__(self, coder):
        super().__init__()
        self.box_coder = coder

    def forward(self, codes: Tensor, proposals: List[Tensor], targets: List[Tensor]) -> Tuple[Tensor, Tensor,
                                                                                             List[Tensor]]:
        boxes = torch.cat(proposals)
        return (self.box_coder.decode(codes, proposals), self.box_coder.decode_single(codes, boxes),
                self.box_coder.encode(targets, proposals))


def test_box_coder_scripts():
    g = torch.Generator().manual_seed(6)
    xy = torch.rand(7, 2, generator=g) * 50
    proposals = list(torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g) * 30], dim=1).split([3, 4]))
    targets_ = [p + torch.rand(p.shape, generator=g) for p in proposals]
    codes = torch.randn(7, 12, generator=g)
    weights = (10.0, 10.0, 5.0, 5.0)
    ours = BoxCoding(BoxCoder(weights))
    out = script(ours)(codes, proposals, targets_)
    assert_equal_structure(out, ours(codes, proposals, targets_))
    expected = script(BoxCoding(TvBoxCoder(weights)))(codes, proposals, targets_)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_functions_script():
    # The functions the modules call, scripted on their own.
    g = torch.Generator().manual_seed(7)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0], [10.0, 10.0, 12.0, 40.0]])
    codes = torch.randn(2, 4, generator=g)
    cells = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),)).cell_anchors
    objectness, deltas = [torch.randn(2, 3, 8, 12, generator=g)], [torch.randn(2, 12, 8, 12, generator=g)]
    masks = torch.rand(2, 1, 14, 14, generator=g)
    calls = [
        (decode_boxes, (codes, boxes, (10.0, 10.0, 5.0, 5.0))),
        (encode_boxes, (boxes + 1, boxes)),
        (grid_anchors, (cells, [(8, 12)], [(8, 8)], 2)),
        (generate_proposals, (objectness, deltas, cells, [(64, 90), (60, 96)], [64, 96], 50, 20)),
        (generate_proposals, (objectness, deltas, cells, torch.tensor([[64, 90], [60, 96]]), [64, 96], 50, 20)),
        (paste_masks_in_image, (masks, boxes, (48, 40))),
        (paste_masks_in_image, (masks, boxes, (48, 40), 1, 0.5)),
    ]
    for fn, args in calls:
        assert_equal_structure(script(fn)(*args), fn(*args))


# torch.fx: detection models as a whole do not trace (torchvision's do not either: data-dependent
# control flow, loops over images); their parts that torchvision traces do, with fastmask's pooler.
class BoxBranch(nn.Module):
    # (not the predictor: torchvision's FastRCNNPredictor branches on x.dim())
    def __init__(self, heads):
        super().__init__()
        self.pool, self.head = heads.box_roi_pool, heads.box_head

    def forward(self, features: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]):
        return self.head(self.pool(features, boxes, image_shapes))


class BackbonePooler(nn.Module):
    def __init__(self, backbone, pool):
        super().__init__()
        self.backbone, self.pool = backbone, pool

    def forward(self, x: Tensor, boxes: List[Tensor]):
        return self.pool(self.backbone(x), boxes, [(96, 128), (96, 128)])


def test_fx_feature_extraction_like_torchvision(models):
    tv, fm = models
    assert isinstance(fm.roi_heads.box_roi_pool, MultiScaleRoIAlign)
    torch.manual_seed(8)
    x = torch.rand(2, 3, 96, 128)
    boxes = [torch.tensor([[4.0, 6.0, 60.0, 50.0], [10.0, 20.0, 120.0, 90.0]]), torch.tensor([[0.0, 0.0, 30.0, 30.0]])]
    backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5)
    with torch.no_grad():
        features = backbone(x)
    names = ["0", "1", "2", "3"]
    cases = [(BoxBranch(fm.roi_heads), BoxBranch(tv.roi_heads), "head.fc6", (features, boxes, [(96, 128)] * 2)),
             (BackbonePooler(backbone, MultiScaleRoIAlign(names, 14, 2)),
              BackbonePooler(backbone, torchvision.ops.MultiScaleRoIAlign(names, 14, 2)), "backbone.fpn", (x, boxes))]
    for ours, reference, inner, inputs in cases:
        # torchvision's feature extraction makes torchvision.ops' modules leaves (one node, "pool");
        # fastmask's pooler is traced into (its kernel calls are leaf functions), or is one node
        # when named a leaf module.
        ours_nodes, reference_nodes = get_graph_node_names(ours), get_graph_node_names(reference)
        for nodes in ours_nodes, reference_nodes:
            assert inner in nodes[0] and inner in nodes[1]
        assert ([n for n in ours_nodes[1] if not n.startswith("pool")]
                == [n for n in reference_nodes[1] if not n.startswith("pool")])
        last = reference_nodes[1][-1]
        with torch.no_grad():
            expected = create_feature_extractor(reference.eval(), {inner: "inner", last: "out"})(*inputs)
            traced = create_feature_extractor(ours.eval(), {inner: "inner", ours_nodes[1][-1]: "out"})(*inputs)
            as_leaf = create_feature_extractor(ours, {inner: "inner", last: "out"},
                                               tracer_kwargs={"leaf_modules": [MultiScaleRoIAlign]})(*inputs)
        for out in traced, as_leaf:
            assert list(out) == ["inner", "out"]
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["backbone", "transform", "rpn", "rpn.anchor_generator", "roi_heads"])
def test_fx_model_modules_trace_where_torchvision_does(models, name):
    def traces(module):
        try:
            get_graph_node_names(module)
        except Exception:  # torch.fx's errors for data-dependent control flow and loops over proxies
            return False
        return True

    tv, fm = models
    assert traces(fm.get_submodule(name)) or not traces(tv.get_submodule(name))

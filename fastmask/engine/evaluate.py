"""COCO evaluation (pycocotools): box and mask AP of a model on a data set."""
import contextlib
import io
from typing import Any, Dict, List

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.coco import collate, encode_masks, require_pycocotools, to_coco

__all__ = ["evaluate", "coco_results"]


def coco_results(output: Dict[str, torch.Tensor], image_id: int, mask_threshold: float = 0.5) -> List[Dict[str, Any]]:
    """One image's detections in COCO's result format (category id = label, RLE masks)."""
    boxes = output["boxes"].tolist()
    masks = encode_masks(output["masks"][:, 0] > mask_threshold)
    return [{"image_id": image_id, "category_id": label, "score": score,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": rle}
            for (x1, y1, x2, y2), label, score, rle in zip(boxes, output["labels"].tolist(), output["scores"].tolist(), masks)]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 2, device: str = "cpu",
             workers: int = 0, verbose: bool = False) -> Dict[str, float]:
    """COCO box and mask AP of ``model`` on ``dataset`` (``(image, target)`` pairs with
    ``classes``, e.g. ``SyntheticShapes`` or ``CocoDetection``): ``bbox_AP``, ``bbox_AP50``,
    ``bbox_AP75``, ``segm_AP``, ``segm_AP50``, ``segm_AP75`` (in [0, 1]). ``verbose`` prints
    pycocotools' tables."""
    COCO, COCOeval, _ = require_pycocotools()
    was_training = model.training
    model.eval()
    results = []
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for output, target in zip(outputs, targets):
            results += coco_results({k: v.cpu() for k, v in output.items()}, int(target["image_id"]))
    model.train(was_training)

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    metrics = {}
    with quiet:
        gt = COCO()
        gt.dataset = to_coco(dataset)
        gt.createIndex()
        detections = gt.loadRes(results) if results else None
        for iou_type in ("bbox", "segm"):
            if detections is None:
                stats = [0.0, 0.0, 0.0]
            else:
                coco_eval = COCOeval(gt, detections, iou_type)
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
                stats = [max(0.0, float(s)) for s in coco_eval.stats[:3]]  # -1: no ground truth
            metrics.update({f"{iou_type}_AP": stats[0], f"{iou_type}_AP50": stats[1], f"{iou_type}_AP75": stats[2]})
    return metrics

"""COCO-format data: a data set reading users' own annotation files, and the conversion of any
data set of (image, target) pairs into COCO's ground-truth format (for evaluation)."""
import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CocoDetection", "require_pycocotools", "to_coco", "encode_masks", "collate"]


def require_pycocotools():
    """pycocotools' ``COCO``, ``COCOeval`` and ``mask`` module, or a clear error."""
    try:
        from pycocotools import mask
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("COCO data and evaluation need pycocotools: pip install pycocotools "
                          "(or pip install 'fastmask[train]')") from e
    return COCO, COCOeval, mask


def collate(batch: Sequence[Tuple[Tensor, Dict[str, Tensor]]]) -> Tuple[List[Tensor], List[Dict[str, Tensor]]]:
    """A batch as the models take it: a list of images and a list of targets."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def encode_masks(masks: Tensor) -> List[Dict[str, Any]]:
    """COCO run-length encodings of ``[N, H, W]`` binary masks (JSON-ready)."""
    _, _, mask_utils = require_pycocotools()
    rles = mask_utils.encode(np.asfortranarray(masks.to(torch.uint8).cpu().numpy().transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


class CocoDetection(Dataset):
    """Images and instance annotations in COCO format (``annotation_file``: a COCO json;
    ``image_dir``: where its ``file_name``s are). Category ids become contiguous labels
    ``1..K`` in the order of ``categories`` (``category_ids[label]`` maps back); crowd and empty
    annotations are skipped. Returns ``(image [3, H, W] float in [0, 1], target)`` as
    ``SyntheticShapes`` does."""

    def __init__(self, image_dir: str, annotation_file: str):
        COCO, _, _ = require_pycocotools()
        if not os.path.isfile(annotation_file):
            raise FileNotFoundError(f"annotation_file {annotation_file!r} does not exist")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image_dir {image_dir!r} is not a folder")
        self.image_dir = image_dir
        self.coco = COCO(annotation_file)
        self.image_ids = sorted(self.coco.getImgIds())
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c["id"])
        self.category_ids = [0] + [c["id"] for c in cats]
        self.classes = ("background",) + tuple(c["name"] for c in cats)
        self._label = {cat_id: label for label, cat_id in enumerate(self.category_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Tuple[Tensor, Dict[str, Tensor]]:
        from PIL import Image

        image_id = self.image_ids[index]
        info = self.coco.loadImgs(image_id)[0]
        with Image.open(os.path.join(self.image_dir, info["file_name"])) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
        h, w = image.shape[1:]
        anns = [a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id))
                if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = [torch.from_numpy(self.coco.annToMask(a)) for a in anns]
        return image, {
            "boxes": boxes,
            "labels": torch.tensor([self._label[a["category_id"]] for a in anns], dtype=torch.int64),
            "masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8),
            "image_id": torch.tensor(image_id),
        }


def to_coco(dataset: Dataset) -> Dict[str, Any]:
    """COCO ground truth (``images``, ``annotations`` with RLE masks, ``categories``) of a data set
    of ``(image, target)`` pairs with ``classes`` (names, background first). Labels are the
    category ids."""
    images, annotations = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        image_id = int(target["image_id"])
        images.append({"id": image_id, "height": int(image.shape[1]), "width": int(image.shape[2]),
                       "file_name": f"{image_id:06d}.png"})
        for box, label, rle, area in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                         encode_masks(target["masks"]), target["masks"].sum((1, 2)).tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(area),
                                "segmentation": rle, "iscrowd": 0})
    categories = [{"id": i, "name": name} for i, name in enumerate(dataset.classes) if i > 0]
    return {"images": images, "annotations": annotations, "categories": categories}

"""Data sets: synthetic shapes (no download) and COCO-format annotations."""
from .coco import CocoDetection, collate, to_coco
from .shapes import SyntheticShapes

__all__ = ["SyntheticShapes", "CocoDetection", "to_coco", "collate"]

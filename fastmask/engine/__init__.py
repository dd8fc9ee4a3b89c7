"""Training, evaluation, checkpoints and visualisation for fastmask's Mask R-CNN."""
from .checkpoint import ARCHS, build_model, load_checkpoint, save_checkpoint
from .evaluate import coco_results, evaluate
from .train import TrainConfig, train, train_step
from .visualize import draw_detections

__all__ = ["ARCHS", "build_model", "load_checkpoint", "save_checkpoint", "evaluate", "coco_results",
           "TrainConfig", "train", "train_step", "draw_detections"]

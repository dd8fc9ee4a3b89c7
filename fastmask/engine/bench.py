"""End-to-end inference latency: fastmask's Mask R-CNN against torchvision's, same weights and images."""
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torchvision
from torch import Tensor, nn

from ..models import maskrcnn_resnet50_fpn

__all__ = ["model_pair", "time_ms", "detections_differ"]


def model_pair(seed: int = 0, **kwargs) -> Tuple[nn.Module, nn.Module]:
    """(torchvision's maskrcnn_resnet50_fpn, fastmask's) in eval mode with the same random
    weights (``kwargs``: model keyword arguments, e.g. ``box_score_thresh``)."""
    kwargs = {"weights": None, "weights_backbone": None, **kwargs}
    torch.manual_seed(seed)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(**kwargs).eval()
    ours = maskrcnn_resnet50_fpn(**kwargs).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median time of ``fn`` in ms over ``repeats`` runs after ``warmup`` (CUDA: CUDA events)."""
    for _ in range(warmup):
        fn()
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def detections_differ(reference: List[Dict[str, Tensor]], ours: List[Dict[str, Tensor]], atol: float = 1e-4) -> float:
    """The number of images whose detections (count, labels, boxes, scores) differ."""
    differ = 0
    for r, o in zip(reference, ours):
        same = (len(r["boxes"]) == len(o["boxes"]) and torch.equal(r["labels"], o["labels"])
                and torch.allclose(r["boxes"], o["boxes"], atol=atol) and torch.allclose(r["scores"], o["scores"], atol=atol))
        differ += not same
    return float(differ)

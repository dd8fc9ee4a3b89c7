"""End-to-end inference latency: fastmask's Mask R-CNN against torchvision's, same weights and images."""
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch
import torchvision
from torch import Tensor, nn

from ..models import maskrcnn_resnet50_fpn

__all__ = ["model_pair", "time_ms", "time_interleaved_ms", "detections_differ", "cuda_graph"]

T = TypeVar("T")


def model_pair(seed: int = 0, **kwargs) -> Tuple[nn.Module, nn.Module]:
    """(torchvision's maskrcnn_resnet50_fpn, fastmask's) in eval mode with the same random
    weights (``kwargs``: model keyword arguments, e.g. ``box_score_thresh``)."""
    kwargs = {"weights": None, "weights_backbone": None, **kwargs}
    torch.manual_seed(seed)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(**kwargs).eval()
    ours = maskrcnn_resnet50_fpn(**kwargs).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def time_interleaved_ms(fns: Sequence[Callable[[], object]], device: torch.device, repeats: int, warmup: int,
                        budget_s: Optional[float] = None) -> List[float]:
    """Median time of each of ``fns`` in ms over ``repeats`` rounds after ``warmup`` rounds; a
    round runs each function once, in turn (CUDA: timed by CUDA events). Alternating the runs makes
    a drift in the machine's speed (a neighbour's load, the clock) reach every function alike, so
    their ratio holds where back-to-back medians would not. ``budget_s``: stop after the round in
    which one function's runs pass this long in all (at least 3 rounds)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: List[List[float]] = [[] for _ in fns]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for _ in range(repeats):
        for fn, times in zip(fns, samples):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and len(samples[0]) >= 3 and max(map(sum, samples)) > budget_s * 1e3:
            break
    return [statistics.median(times) for times in samples]


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int,
            budget_s: Optional[float] = None) -> float:
    """Median time of ``fn`` in ms over ``repeats`` runs after ``warmup`` (CUDA: CUDA events).
    ``budget_s``: stop timing once the runs took this long in all (at least 3 runs)."""
    return time_interleaved_ms([fn], device, repeats, warmup, budget_s)[0]


def cuda_graph(fn: Callable[[], T], warmup: int = 2) -> Tuple[Callable[[], T], T]:
    """Captures ``fn()`` into a CUDA graph, after ``warmup`` calls on a side stream (as PyTorch
    asks: lazy initialisation stays out of the capture). Returns ``(replay, outputs)``:
    ``replay()`` reruns the captured kernels on the tensors ``fn`` read while captured (copy new
    inputs into them first), overwrites ``outputs`` and returns them."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()

    def replay() -> T:
        graph.replay()
        return outputs

    return replay, outputs


def detections_differ(reference: List[Dict[str, Tensor]], ours: List[Dict[str, Tensor]], atol: float = 1e-4) -> float:
    """The number of images whose detections (count, labels, boxes, scores) differ."""
    differ = 0
    for r, o in zip(reference, ours):
        # In float32: a model under autocast returns bf16/fp16 boxes and scores.
        same = (len(r["boxes"]) == len(o["boxes"]) and torch.equal(r["labels"], o["labels"])
                and torch.allclose(r["boxes"].float(), o["boxes"].float(), atol=atol)
                and torch.allclose(r["scores"].float(), o["scores"].float(), atol=atol))
        differ += not same
    return float(differ)

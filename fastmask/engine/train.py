"""Training: one step with automatic mixed precision, and a loop with progress bar, loss log,
checkpoints that resume, and multi-process data-parallel training (torchrun)."""
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from ..data import collate
from .checkpoint import build_model, load_checkpoint, save_checkpoint

__all__ = ["TrainConfig", "train_step", "train", "autocast_dtype"]


@dataclass
class TrainConfig:
    arch: str = "resnet50"
    num_classes: int = 4
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # MaskRCNN keyword arguments
    iterations: int = 1000
    batch_size: int = 4  # per process
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100  # iterations of linear warm-up, then cosine decay to 0
    max_grad_norm: Optional[float] = 10.0  # gradient clipping (None: off); keeps training from scratch stable
    amp: bool = False  # float16 on CUDA (with loss scaling), bfloat16 on the CPU
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = 200
    log_every: int = 10
    progress: bool = True
    classes: List[str] = field(default_factory=list)  # names by label (background first), saved for predict


def autocast_dtype(device: torch.device, amp: bool) -> Optional[torch.dtype]:
    if not amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def train_step(model: nn.Module, images: List[Tensor], targets: List[Dict[str, Tensor]],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               amp_dtype: Optional[torch.dtype] = None, max_grad_norm: Optional[float] = None) -> Dict[str, float]:
    """One optimisation step (autocast to ``amp_dtype`` when given, gradients clipped to
    ``max_grad_norm`` when given); returns the losses and their sum, ``loss``, as floats."""
    device_type = images[0].device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        losses = model(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss.item()} ({ {k: v.item() for k, v in losses.items()} }): "
                                 "lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if max_grad_norm is not None:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}


def _batches(loader: DataLoader, start_epoch: int) -> Iterator:
    """Batches forever, each pass over the data a new epoch (reshuffled, also across processes)."""
    if len(loader) == 0:
        raise ValueError("the data set gives this process no batch: use more images or a smaller batch size")
    epoch = start_epoch
    while True:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _lr_factor(iteration: int, config: TrainConfig) -> float:
    if iteration < config.warmup:
        return (iteration + 1) / config.warmup
    progress = (iteration - config.warmup) / max(1, config.iterations - config.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _to_device(images, targets, device):
    return ([im.to(device, non_blocking=True) for im in images],
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets])


def train(config: TrainConfig, dataset: Dataset, resume: bool = True) -> nn.Module:
    """Trains ``config.iterations`` steps on ``dataset`` and returns the model. Under ``torchrun``
    (``WORLD_SIZE`` > 1) each process trains on its share of every batch with DDP (gloo on the
    CPU, NCCL on CUDA); only rank 0 logs and writes checkpoints. With ``resume``, training
    continues from ``out_dir/checkpoint.pth`` when it exists. Writes ``out_dir/log.jsonl`` (one
    JSON line of losses per ``log_every`` iterations) and ``out_dir/checkpoint.pth``."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(config.device)
    if distributed:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    rank = dist.get_rank() if distributed else 0
    main = rank == 0

    checkpoint_path = os.path.join(config.out_dir, "checkpoint.pth")
    model_config = {"arch": config.arch, "num_classes": config.num_classes, "kwargs": config.model_kwargs,
                    "classes": config.classes}
    start, state = 0, {}
    if resume and os.path.isfile(checkpoint_path):
        model, _, state = load_checkpoint(checkpoint_path)
        start = state["iteration"]
    else:
        torch.manual_seed(config.seed)  # the same initial weights in every process
        model = build_model(config.arch, config.num_classes, **config.model_kwargs)
    torch.manual_seed(config.seed + 1000 * rank + start)  # the samplers' draws: per process, new on resume
    model.to(device).train()

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: _lr_factor(it, config))
    amp_dtype = autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty when saved with the scaler disabled (no fp16)
            scaler.load_state_dict(state["scaler"])
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base_lr * _lr_factor(start, config)  # the schedule may be longer now
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = (DistributedSampler(dataset, seed=config.seed) if distributed
               else RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed + start)))
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                        collate_fn=collate, drop_last=len(sampler) >= config.batch_size,  # this process's share
                        persistent_workers=config.workers > 0)
    batches = _batches(loader, start_epoch=start // max(1, len(loader)))

    if main:
        os.makedirs(config.out_dir, exist_ok=True)
        with open(os.path.join(config.out_dir, "config.json"), "w") as f:
            json.dump(asdict(config), f, indent=2)
    progress = None
    if main and config.progress:
        from tqdm import tqdm

        progress = tqdm(total=config.iterations, initial=start, desc="train", dynamic_ncols=True)
    t0 = time.perf_counter()
    for iteration in range(start, config.iterations):
        images, targets = _to_device(*next(batches), device)
        losses = train_step(model, images, targets, optimizer, scaler, amp_dtype, config.max_grad_norm)
        scheduler.step()
        done = iteration + 1
        if main and (done % config.log_every == 0 or done == config.iterations):
            record = {"iteration": done, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": round(time.perf_counter() - t0, 2), **{k: round(v, 5) for k, v in losses.items()}}
            with open(os.path.join(config.out_dir, "log.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        if main and (done % config.checkpoint_every == 0 or done == config.iterations):
            save_checkpoint(checkpoint_path, model, model_config, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), iteration=done)
        if progress is not None:
            progress.set_postfix(loss=f"{losses['loss']:.3f}", refresh=False)
            progress.update(1)
    if progress is not None:
        progress.close()
    return getattr(model, "module", model)

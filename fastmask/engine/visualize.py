"""PNG overlays of predicted masks and boxes."""
from typing import Dict, Sequence

import torch
from torch import Tensor

__all__ = ["draw_detections"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)]


def draw_detections(image: Tensor, detections: Dict[str, Tensor], classes: Sequence[str],
                    score_threshold: float = 0.5, mask_threshold: float = 0.5, alpha: float = 0.45):
    """A PIL image: ``image`` ([3, H, W] in [0, 1]) with each detection scoring at least
    ``score_threshold`` drawn as a translucent mask, its box, and "class score"."""
    from PIL import Image, ImageDraw

    canvas = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().copy()
    keep = detections["scores"] >= score_threshold
    boxes, labels, scores = detections["boxes"][keep].cpu(), detections["labels"][keep].cpu(), detections["scores"][keep].cpu()
    masks = detections["masks"][keep, 0].cpu() > mask_threshold if "masks" in detections else None
    for i in range(len(boxes)):
        if masks is not None:
            colour = torch.tensor(_PALETTE[i % len(_PALETTE)], dtype=torch.float32)
            region = masks[i].numpy()
            canvas[region] = ((1 - alpha) * torch.from_numpy(canvas[region]).float() + alpha * colour).to(torch.uint8).numpy()
    out = Image.fromarray(canvas)
    draw = ImageDraw.Draw(out)
    for i, (box, label, score) in enumerate(zip(boxes.tolist(), labels.tolist(), scores.tolist())):
        colour = _PALETTE[i % len(_PALETTE)]
        draw.rectangle(box, outline=colour, width=1)
        name = classes[label] if 0 <= label < len(classes) else str(label)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {score:.2f}", fill=colour)
    return out

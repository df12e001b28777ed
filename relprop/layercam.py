"""ultralytics's LayerCAM (`ultralytics.utils.plotting.class_activation_map`, used by `predict(visualize=True)`),
for any scalar of the model's output: Σ_levels-max of relu(Σ_c relu(∂s/∂A) · A) per head input A, each level
bilinearly resized to the input and divided by its maximum, then the element-wise maximum over levels.

`box_layercam` applies it to one box's score (relprop's target); `image_layercam` reproduces ultralytics's image map
(max over the ≤ topk predictions whose best class logit passes conf).  Kept here so the CLI and the benchmark share
one implementation; the equality with ultralytics is tested in tests/test_layercam.py.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _head_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward of an ultralytics BaseModel with grad on: (pred (B, 4+nc, A), the 4-D tensors entering the head)."""
    acts: list[torch.Tensor] = []
    head = model.model[-1]
    head.shape = head.shapes = None  # rebuild the anchor caches, as ultralytics does (inference tensors break autograd)

    def pre_hook(module, inputs):
        a = inputs[0]
        acts.extend(t for t in (a if isinstance(a, (list, tuple)) else [a]) if t.ndim == 4)

    handle = head.register_forward_pre_hook(pre_hook)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            y = model(x.detach().clone().requires_grad_(True))
    finally:
        handle.remove()
    pred = y[0] if isinstance(y, (tuple, list)) else y
    return pred, acts


def _layercam(score: torch.Tensor, acts: list[torch.Tensor], size: tuple[int, int], retain: bool) -> torch.Tensor:
    """ultralytics's per-prediction map (B, 1, h, w) in [0, 1] for the scalar `score` (summed over the batch)."""
    grads = torch.autograd.grad(score.sum(), acts, retain_graph=retain)
    levels = []
    for a, g in zip(acts, grads):
        c = (g.float().clamp(min=0) * a.float()).sum(1, keepdim=True).clamp(min=0)
        c = nn.functional.interpolate(c, size, mode="bilinear", align_corners=False)
        levels.append(c / c.amax((2, 3), keepdim=True).clamp(min=1e-7))
    return torch.stack(levels).amax(0).detach()


def box_layercam(model: nn.Module, x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """LayerCAM of `score(pred) → (B,)` (e.g. a box's summed class probability over its matched candidates) for the
    letterboxed input x (B, 3, h, w): (B, h, w) in [0, 1], ultralytics's computation with this target."""
    pred, acts = _head_forward(model, x)
    with torch.enable_grad():
        return _layercam(score(pred), acts, tuple(x.shape[2:]), retain=False)[:, 0]


def image_layercam(model: nn.Module, x: torch.Tensor, conf: float = 0.25, topk: int = 16) -> torch.Tensor:
    """ultralytics's image map for x (1, 3, h, w): the maximum of the per-prediction maps of the ≤ topk predictions
    whose best class logit passes `conf` (the best alone if none does).  → (1, h, w) in [0, 1]."""
    pred, acts = _head_forward(model, x)
    with torch.enable_grad():
        nc = pred.shape[1] - 4
        s = torch.logit(pred[:, 4:4 + nc].double()).amax(1)  # (B, A) best class logit (pred holds sigmoids)
        keep = (s.sigmoid() >= conf) | (s == s.amax(1, keepdim=True))
        n = min(int(keep.sum(1).amax()), topk)
        rank = torch.arange(n) % keep.sum(1, keepdim=True).clamp(min=1)
        order = s.masked_fill(~keep, float("-inf")).argsort(1, descending=True).gather(1, rank)
        cam = None
        for k in range(n):
            level = _layercam(s.gather(1, order[:, k:k + 1]), acts, tuple(x.shape[2:]), retain=k < n - 1)
            cam = level if cam is None else torch.maximum(cam, level)
    return cam[:, 0]

"""HSIC-Lasso per layer (Yamada et al. 2014): which filters' outputs carry the layer's output."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F

import fxgraph

from ..coupling import Coupling
from ..errors import PruningError
from ..importance import Scores
from . import distributed
from .calibration import Calibration
from .hsic_lasso import hsic_lasso
from .progress import progress
from .stats import conv_modules


def _first_tensor(value: Any) -> torch.Tensor:
    """The first tensor of a module output (a head returns nested tuples and dicts: its `pred` comes first)."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        try:
            return _first_tensor(item)
        except TypeError:
            continue
    raise TypeError(f"no tensor in a module output of type {type(value).__name__}")


def _pooled(t: torch.Tensor, size: int) -> torch.Tensor:
    """A small per-image summary: feature maps average-pooled to size x size, other outputs to size² values."""
    if t.ndim == 4:
        return F.adaptive_avg_pool2d(t, size)
    return F.adaptive_avg_pool1d(t.reshape(t.shape[0], 1, -1), size * size)


class HSIC:
    """HSIC-Lasso per group (see pruning.hsic_lasso): each filter's output over the calibration images against
    the output of its ultralytics layer; a filter's score is its Lasso coefficient (0 = carries nothing new)."""

    name = "hsic"

    def __init__(self, calibration: Calibration, *, lam: float = 0.0, pool: int = 4) -> None:
        self.calibration, self.lam, self.pool = calibration, lam, pool

    def _features(self, graph: fxgraph.FlatGraph, coupling: Coupling):
        model = copy.deepcopy(graph.model).float().to(graph.device).eval()
        facts = graph.facts
        if facts is not None and facts.branch is not None:  # YOLO26: the head's target is the traced branch's output
            model.model[facts.head_layer].end2end = facts.branch == "one2one"
        groups = [g for g in coupling.groups.values() if g.prunable and g.layer is not None]
        filters = conv_modules(model, {p for g in groups for u in g.units for p, _ in u.sources[:1]})
        layers = {g.layer for g in groups}
        feats: dict[str, list[torch.Tensor]] = defaultdict(list)
        handles = []

        def keep(key: str):
            def hook(_m, _inp, out):
                feats[key].append(_pooled(_first_tensor(out).detach().float(), self.pool).cpu())
            return hook

        for path, module in filters.items():
            handles.append(module.register_forward_hook(keep(path)))
        for layer in layers:
            handles.append(model.model[layer].register_forward_hook(keep(f"layer:{layer}")))
        try:
            with torch.no_grad():
                for batch in progress(self.calibration.batches, "hsic features"):
                    model(batch["img"].to(graph.device).float() / 255)
        finally:
            for h in handles:
                h.remove()
        gathered = {k: distributed.all_gather_cat(torch.cat(v)) for k, v in sorted(feats.items())}
        return groups, gathered

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        groups, feats = self._features(graph, coupling)
        n = next(iter(feats.values())).shape[0] if feats else 0
        if n < 3:
            raise PruningError(f"HSIC-Lasso needs at least 3 calibration images (Gram matrices over images); got {n}")
        scores: Scores = {name: torch.zeros(len(g), dtype=torch.float64) for name, g in coupling.groups.items()}
        for group in progress(groups, "hsic lasso"):
            target = feats.get(f"layer:{group.layer}")
            rows = [(u, *unit.sources[0]) for u, unit in enumerate(group.units) if unit.sources]
            if target is None or not rows or rows[0][1] not in feats:
                continue
            out = feats[rows[0][1]]  # (N, C, p, p)
            per_filter = torch.stack([out[:, index] for _, _path, index in rows])  # (units, N, p, p)
            alpha = hsic_lasso(per_filter, target, lam=self.lam)
            for (u, _path, _index), a in zip(rows, alpha):
                scores[group.name][u] = a
        return scores

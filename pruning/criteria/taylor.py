"""First-order Taylor importance: |Σ activation × ∂loss/∂activation| with ultralytics's own training loss."""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

import fxgraph

from ..coupling import Coupling
from ..criterion import Scores
from . import distributed
from .calibration import Calibration
from .progress import progress
from .stats import FilterStats, add_stat, conv_modules, unit_scores


class Taylor:
    """First-order Taylor importance (Molchanov et al.): Σ over images of |Σ_space activation × ∂loss/∂activation|
    at each conv's output, with ultralytics's own training loss on the calibration labels."""

    name = "taylor"

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration

    def filter_stats(self, graph: fxgraph.FlatGraph, paths: Iterable[str]) -> FilterStats:
        model = copy.deepcopy(graph.model).float().to(graph.device)
        model.args = self.calibration.args
        model.train()
        for m in model.modules():  # fixed statistics: score the model as it predicts, not a batch's drift
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        acts: dict[str, torch.Tensor] = {}
        handles = []
        for path, module in conv_modules(model, paths).items():
            def hook(_m, _inp, out, path=path):
                out.retain_grad()
                acts[path] = out
            handles.append(module.register_forward_hook(hook))
        stats: FilterStats = {}
        try:
            for batch in progress(self.calibration.batches, "taylor scoring"):
                b = dict(batch)
                b["img"] = batch["img"].to(graph.device).float() / 255
                for key, value in b.items():  # every label tensor the task's loss reads (keypoints for pose...)
                    if key != "img" and isinstance(value, torch.Tensor):
                        b[key] = value.to(graph.device)
                model.zero_grad(set_to_none=True)
                loss, _ = model.loss(b)
                loss.sum().backward()
                for path, a in acts.items():
                    if a.grad is not None:
                        add_stat(stats, path, (a * a.grad).sum((2, 3)).abs().sum(0))
                acts.clear()
        finally:
            for h in handles:
                h.remove()
        return stats

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        paths = {p for g in coupling.groups.values() for u in g.units for p, _ in u.sources}
        return unit_scores(coupling, distributed.all_reduce_sums(self.filter_stats(graph, paths)))


"""Criterion-bound pruners for in-memory use: one object holds a criterion and its data, `.prune(model, ...)` cuts.

    pruned = pruning.MagnitudePruner(norm=1).prune("best.pt", ratio=0.3)
    pruned = pruning.DetDSHAPPruner(data="data.yaml", imgsz=640).prune(model, target=0.4)   # 40% of GFLOPs
    pruned = pruning.HsicLassoPruner(data="data.yaml").prune(model, threshold=0.0)          # outside the support

Each is exactly `pruning.prune(g, pruning.plan(g, criterion=...))` (or `plan_for_target`) with the criterion built
from the pruner's arguments; the model and its weights file are never modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import fxgraph

from . import api
from .criteria import HSIC, Calibration, DetDSHAP, Magnitude, load_calibration
from .errors import PlanError, PruningError
from .importance import Criterion


class CriterionPruner:
    """Base: prunes with `self.criterion(graph)`; subclasses say which criterion and what data it needs."""

    def __init__(self, *, imgsz: int = 640, scope: str | Iterable[int] = "all", min_channels: int = 1,
                 round_to: int = 8) -> None:
        self.imgsz, self.scope, self.min_channels, self.round_to = imgsz, scope, min_channels, round_to

    def criterion(self, graph: fxgraph.FlatGraph) -> Criterion:
        raise NotImplementedError

    def graph(self, model: Any) -> fxgraph.FlatGraph:
        """The FlatGraph of `model` (a FlatGraph, weights path, yaml, YOLO or ultralytics model)."""
        return model if isinstance(model, fxgraph.FlatGraph) else fxgraph.trace(model, self.imgsz)

    def plan(self, model: Any, *, ratio: float | None = None, target: float | None = None,
             threshold: float | None = None, metric: str = "gflops"):
        """(The traced graph, the plan) that `prune` would apply: exactly one of `ratio` (of the filters in scope, ranked globally),
        `target` (the smallest plan removing that fraction of `metric`) or `threshold` (every unit scoring <= it)."""
        given = [k for k, v in (("ratio", ratio), ("target", target), ("threshold", threshold)) if v is not None]
        if len(given) != 1:
            raise PlanError(f"give exactly one of ratio=, target= or threshold=; got {given or 'none'}")
        g = self.graph(model)
        crit = self.criterion(g)
        common = dict(scope=self.scope, criterion=crit, min_channels=self.min_channels, round_to=self.round_to)
        if target is not None:
            return g, api.plan_for_target(g, target, metric=metric, **common)[0]
        return g, api.plan(g, ratio=ratio, threshold=threshold, **common)

    def prune(self, model: Any, *, ratio: float | None = None, target: float | None = None,
              threshold: float | None = None, metric: str = "gflops") -> api.Pruned:
        """Score, plan and cut `model`; returns a `Pruned` (save it with `.save(path)`)."""
        g, p = self.plan(model, ratio=ratio, target=target, threshold=threshold, metric=metric)
        return api.prune(g, p)


class MagnitudePruner(CriterionPruner):
    """Lp-magnitude pruning (`norm` 1 or 2: the `l1`/`l2` criteria, DepGraph's baseline); needs no data."""

    def __init__(self, norm: int = 2, **options: Any) -> None:
        if norm not in (1, 2):
            raise PruningError(f"MagnitudePruner norm must be 1 or 2, got {norm!r}")
        super().__init__(**options)
        self.norm = norm

    def criterion(self, graph: fxgraph.FlatGraph) -> Criterion:
        return Magnitude(self.norm)


class _DataPruner(CriterionPruner):
    """A pruner whose criterion reads `calib_images` images (with labels) of split `split` of `data`."""

    def __init__(self, data: str | Path | Calibration, *, calib_images: int = 32, split: str = "train",
                 batch: int = 8, **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(data, Calibration) and not Path(data).is_file():
            raise PruningError(f"data={data}: no such dataset yaml")
        self.data, self.calib_images, self.split, self.batch = data, calib_images, split, batch

    def calibration(self, graph: fxgraph.FlatGraph) -> Calibration:
        if isinstance(self.data, Calibration):
            return self.data
        return load_calibration(self.data, graph.task, graph.imgsz[0], self.calib_images, split=self.split,
                                batch=min(self.batch, self.calib_images), stride=int(max(graph.stride)))


class DetDSHAPPruner(_DataPruner):
    """DetDSHAP (the paper): Σ |DeepSHAP relevance| of each filter over the calibration boxes.  Options as in
    `pruning.criteria.DetDSHAP` (`boxes`, `iou`, `baseline`, `target`, `rules`)."""

    def __init__(self, data: str | Path | Calibration, *, boxes: str = "labels", iou: float = 0.7,
                 baseline: Any = "black", target: str = "all", **options: Any) -> None:
        super().__init__(data, **options)
        self.options = dict(boxes=boxes, iou=iou, baseline=baseline, target=target)

    def criterion(self, graph: fxgraph.FlatGraph) -> Criterion:
        return DetDSHAP(self.calibration(graph), **self.options)


class HsicLassoPruner(_DataPruner):
    """HSIC-Lasso per group: a filter scores the λ at which it enters its group's Lasso path (`lam`: where the path
    stops), the KKT gradient if it never does.  `prune(model, threshold=0.0)` removes the filters outside each
    group's support at λ = 0; `ratio=`/`target=` remove the same fraction of every group."""

    def __init__(self, data: str | Path | Calibration, *, lam: float = 0.0, **options: Any) -> None:
        super().__init__(data, **options)
        self.lam = lam

    def criterion(self, graph: fxgraph.FlatGraph) -> Criterion:
        return HSIC(self.calibration(graph), lam=self.lam)

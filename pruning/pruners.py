"""Criterion-bound pruners for in-memory use: one object holds a criterion and its data, `.prune(model, ...)` cuts.

    pruned = pruning.MagnitudePruner(norm=1).prune("best.pt", ratio=0.3)
    pruned = pruning.DetDSHAPPruner(data="data.yaml", imgsz=640).prune(model, target=0.4)   # 40% of GFLOPs
    pruned = pruning.HsicLassoPruner(data="data.yaml").prune(model, threshold=0.0)          # outside the support
    pruned = pruning.CriterionPruner("taylor", data="data.yaml").prune(model, ratio=0.2)    # any registered name

Each is exactly `pruning.prune(g, pruning.plan(g, criterion=...))` (or `plan_for_target`) with the criterion built
by the registry (`pruning.criteria.registry`) from the pruner's options; the model and its weights file are never
modified.  (The whole workflow, training and fine-tuning included, is `pruning.PruningJob`.)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable

import fxgraph

from . import api
from .criteria import Calibration, criterion_spec, load_calibration, make_criterion
from .criterion import Criterion
from .errors import PlanError, PruningError
from .plans import Plan


class CriterionPruner:
    """Prunes with the registered criterion `criterion` and its `options` (keywords of its registry spec); a
    criterion that needs data reads `calib_images` images (with labels) of split `split` of `data` (a dataset
    yaml or a `Calibration`), `batch` at a time."""

    def __init__(self, criterion: str = "l2", data: str | Path | Calibration | None = None, *,
                 options: dict[str, Any] | None = None, imgsz: int = 640, scope: str | Iterable[int] = "all",
                 min_channels: int | None = None, round_to: int = 8, calib_images: int = 32, split: str = "train",
                 batch: int = 8) -> None:
        spec = criterion_spec(criterion)
        if spec.needs_data and data is None:
            raise PruningError(f"criterion {criterion!r} needs calibration data: give data='data.yaml'")
        if data is not None and not isinstance(data, Calibration) and not Path(data).is_file():
            raise PruningError(f"data={data}: no such dataset yaml")
        self.name, self.data, self.options = criterion, data, dict(options or {})
        self.imgsz, self.scope, self.min_channels, self.round_to = imgsz, scope, min_channels, round_to
        self.calib_images, self.split, self.batch = calib_images, split, batch

    def criterion(self, graph: fxgraph.FlatGraph) -> Criterion:
        """The criterion for `graph`, built by the registry (calibration data read only if it needs them)."""
        return make_criterion(self.name, lambda: self.calibration(graph), **self.options)

    def calibration(self, graph: fxgraph.FlatGraph) -> Calibration:
        if isinstance(self.data, Calibration):
            return self.data
        if self.data is None:
            raise PruningError(f"criterion {self.name!r} asked for calibration data; give data='data.yaml'")
        return load_calibration(self.data, graph.task, graph.imgsz[0], self.calib_images, split=self.split,
                                batch=min(self.batch, self.calib_images), stride=int(max(graph.stride)))

    def graph(self, model: Any) -> fxgraph.FlatGraph:
        """The FlatGraph of `model` (a FlatGraph, weights path, yaml, YOLO or ultralytics model)."""
        return model if isinstance(model, fxgraph.FlatGraph) else fxgraph.trace(model, self.imgsz)

    def graph_and_plan(self, model: Any, *, ratio: float | None = None, target: float | None = None,
                       threshold: float | None = None, metric: str = "gflops") -> tuple[fxgraph.FlatGraph, Plan]:
        """(The traced graph, the plan) that `prune` would apply: exactly one of `ratio` (of the filters in scope,
        ranked globally), `target` (the smallest plan removing that fraction of `metric`) or `threshold` (every
        unit scoring <= it)."""
        given = [k for k, v in (("ratio", ratio), ("target", target), ("threshold", threshold)) if v is not None]
        if len(given) != 1:
            raise PlanError(f"give exactly one of ratio=, target= or threshold=; got {given or 'none'}")
        g = self.graph(model)
        crit = self.criterion(g)
        common = dict(scope=self.scope, criterion=crit, min_channels=self.min_channels, round_to=self.round_to)
        if target is not None:
            return g, api.plan_for_target(g, target, metric=metric, **common)[0]
        return g, api.plan(g, ratio=ratio, threshold=threshold, **common)

    def plan(self, model: Any, **limits: Any) -> tuple[fxgraph.FlatGraph, Plan]:
        """Deprecated (one release): the name said Plan but it returns (graph, plan); use `graph_and_plan`."""
        warnings.warn("CriterionPruner.plan is deprecated: it returns (graph, plan), unlike pruning.plan; use "
                      "graph_and_plan", DeprecationWarning, stacklevel=2)
        return self.graph_and_plan(model, **limits)

    def prune(self, model: Any, *, ratio: float | None = None, target: float | None = None,
              threshold: float | None = None, metric: str = "gflops") -> api.Pruned:
        """Score, plan and cut `model`; returns a `Pruned` (save it with `.save(path)`)."""
        g, p = self.graph_and_plan(model, ratio=ratio, target=target, threshold=threshold, metric=metric)
        return api.prune(g, p)


class MagnitudePruner(CriterionPruner):
    """Lp-magnitude pruning (`norm` 1 or 2: the `l1`/`l2` criteria, DepGraph's baseline); needs no data."""

    def __init__(self, norm: int = 2, **common: Any) -> None:
        if norm not in (1, 2):
            raise PruningError(f"MagnitudePruner norm must be 1 or 2, got {norm!r}")
        super().__init__(f"l{norm}", **common)
        self.norm = norm


class DetDSHAPPruner(CriterionPruner):
    """DetDSHAP (the paper): Σ |DeepSHAP relevance| of each filter over the calibration boxes.  Options as in
    `pruning.criteria.DetDSHAP` (`boxes`, `iou`, `baseline`, `target`, `rules`)."""

    def __init__(self, data: str | Path | Calibration, *, boxes: str = "labels", iou: float = 0.7,
                 baseline: Any = "black", target: str = "all", **common: Any) -> None:
        super().__init__("detdshap", data, options=dict(boxes=boxes, iou=iou, baseline=baseline, target=target),
                         **common)


class HsicLassoPruner(CriterionPruner):
    """HSIC-Lasso per group: a filter scores the λ at which it enters its group's Lasso path (`lam`: where the path
    stops), the KKT gradient if it never does.  `prune(model, threshold=0.0)` removes the filters outside each
    group's support at λ = 0; `ratio=`/`target=` remove the same fraction of every group."""

    def __init__(self, data: str | Path | Calibration, *, lam: float = 0.0, **common: Any) -> None:
        super().__init__("hsic", data, options=dict(lam=lam), **common)
        self.lam = lam

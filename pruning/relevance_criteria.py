"""Data-driven pruning criteria: DetDSHAP relevance (the paper's Algorithm 2), HSIC-Lasso and first-order Taylor.

Each is a `pruning.Criterion`: called with a FlatGraph and its Coupling, it returns one score per unit of every
group (higher = keep).  A unit's score is the sum of the statistic over the unit's producing filters
(`Unit.sources`), so coupled channels (a residual's operands) are judged together.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

import fxgraph

from . import distributed
from .calibration import Calibration
from .coupling import Coupling
from .criteria import Scores
from .errors import PruningError
from .hsic_lasso import hsic_lasso
from .progress import progress

FilterStats = dict[str, torch.Tensor]  # conv module path -> one number per output filter


def unit_scores(coupling: Coupling, stats: FilterStats) -> Scores:
    """Score of each unit = Σ over its producing filters (path, index) of `stats[path][index]` (0 if unseen)."""
    scores: Scores = {}
    for group in coupling.groups.values():
        s = torch.zeros(len(group), dtype=torch.float64)
        for u, unit in enumerate(group.units):
            for path, index in unit.sources:
                values = stats.get(path)
                if values is not None and index < len(values):
                    s[u] += float(values[index])
        scores[group.name] = s
    return scores


def _add(stats: FilterStats, path: str, values: Any) -> None:
    v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    stats[path] = stats[path] + v if path in stats else v.clone()


class DetDSHAP:
    """Σ over calibration images and boxes of |relevance| of each filter (the paper's Eq. 13).

    `boxes="labels"` explains every ground-truth box (class = its label; boxes no candidate matches at `iou` are
    skipped and counted in `skipped`); `"detections"` explains the model's own detections after NMS.
    `target` is what is explained of each box (relprop.target): its class probability ("class", the paper), its
    coordinates ("box"), or both ("all"), where each of the two explanations of a box is scaled to a total
    |relevance| of 1 so that probabilities and pixels weigh alike (filters that only localise count too).
    """

    name = "detdshap"
    TARGETS = {"class": ("class",), "box": ("box",), "all": ("class", "box")}

    def __init__(self, calibration: Calibration, *, boxes: str = "labels", iou: float = 0.7,
                 baseline: Any = "black", rules: Any = None, conf: float = 0.25, target: str = "all") -> None:
        if boxes not in ("labels", "detections"):
            raise PruningError(f"DetDSHAP boxes must be 'labels' or 'detections', got {boxes!r}")
        if target not in self.TARGETS:
            raise PruningError(f"DetDSHAP target must be one of {', '.join(self.TARGETS)}, got {target!r}")
        self.calibration, self.boxes, self.iou, self.baseline, self.rules, self.conf = (
            calibration, boxes, iou, baseline, rules, conf)
        self.kinds = self.TARGETS[target]
        self.explained = 0
        self.skipped = 0

    def _explain(self, explainer: Any, image: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
                 kind: str) -> tuple[list[Any], int]:
        """The explanations of one image's boxes for one target kind, and how many boxes matched nothing."""
        import relprop

        if self.boxes == "detections":
            return explainer.explain(image, None, target=kind, iou=self.iou, conf=self.conf,
                                     baseline=self.baseline), 0
        explanations, skipped = [], 0
        for box, cls in zip(boxes.tolist(), classes.tolist()):
            try:
                explanations.append(explainer.explain(image, box, target=kind, iou=self.iou, cls=int(cls),
                                                      baseline=self.baseline))
            except relprop.NoMatchError:
                skipped += 1
        return explanations, skipped

    def filter_stats(self, graph: fxgraph.FlatGraph) -> FilterStats:
        import relprop

        explainer = relprop.Explainer(graph.with_folded_batchnorm(), rules=self.rules)
        stats: FilterStats = {}
        self.explained = self.skipped = 0
        for image, boxes, classes in progress(self.calibration.images(), "detdshap scoring",
                                              total=self.calibration.n_images):
            for k, kind in enumerate(self.kinds):
                explanations, skipped = self._explain(explainer, image, boxes, classes, kind)
                if k == 0:  # matching does not depend on the kind: count boxes once
                    self.explained += len(explanations)
                    self.skipped += skipped
                for ex in explanations:
                    relevance = {p: abs(torch.as_tensor(r, dtype=torch.float64)) for p, r in ex.channels.items()}
                    if len(self.kinds) > 1:
                        total = sum(float(r.sum()) for r in relevance.values())
                        relevance = {p: r / total for p, r in relevance.items()} if total > 0 else {}
                    for path, r in relevance.items():
                        _add(stats, path, r)
        counts = distributed.all_reduce_sums({"n": torch.tensor([float(self.explained), float(self.skipped)])})["n"]
        self.explained, self.skipped = int(counts[0]), int(counts[1])
        if self.explained == 0:
            raise PruningError(
                f"DetDSHAP explained no box of the {self.calibration.n_images} calibration images "
                f"({self.skipped} boxes matched no candidate at IoU {self.iou}); train the model longer, lower "
                "`iou`, or score the model's own detections (calib_boxes=detections)"
            )
        return stats

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        return unit_scores(coupling, distributed.all_reduce_sums(self.filter_stats(graph)))


def _conv_modules(model: nn.Module, paths: Iterable[str]) -> dict[str, nn.Module]:
    found = {}
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, nn.Conv2d):
            found[path] = module
    return found


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
        for path, module in _conv_modules(model, paths).items():
            def hook(_m, _inp, out, path=path):
                out.retain_grad()
                acts[path] = out
            handles.append(module.register_forward_hook(hook))
        stats: FilterStats = {}
        try:
            for batch in progress(self.calibration.batches, "taylor scoring"):
                b = dict(batch)
                b["img"] = batch["img"].to(graph.device).float() / 255
                for key in ("cls", "bboxes", "batch_idx", "masks"):
                    if key in b and isinstance(b[key], torch.Tensor):
                        b[key] = b[key].to(graph.device)
                model.zero_grad(set_to_none=True)
                loss, _ = model.loss(b)
                loss.sum().backward()
                for path, a in acts.items():
                    if a.grad is not None:
                        _add(stats, path, (a * a.grad).sum((2, 3)).abs().sum(0))
                acts.clear()
        finally:
            for h in handles:
                h.remove()
        return stats

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        paths = {p for g in coupling.groups.values() for u in g.units for p, _ in u.sources}
        return unit_scores(coupling, distributed.all_reduce_sums(self.filter_stats(graph, paths)))


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
        groups = [g for g in coupling.groups.values() if g.prunable and g.layer is not None]
        filters = _conv_modules(model, {p for g in groups for u in g.units for p, _ in u.sources[:1]})
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

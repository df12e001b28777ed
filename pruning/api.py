"""The public entry points: analyze a model's channel coupling, plan, dry-run and prune.

    g = fxgraph.trace("best.pt", imgsz=640)
    plan = pruning.plan(g, ratio=0.3, criterion="l2")     # or layer_ratios={4: 0.5}, scope="backbone"
    print(pruning.dry_run(g, plan))                        # params / GFLOPs the plan would leave
    pruned = pruning.prune(g, plan)                        # the input is never modified
    pruned.save("best-pruned.pt")                          # loads with plain ultralytics: YOLO("best-pruned.pt")
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch import nn

import fxgraph
from fxgraph import stats

from . import depth, surgery
from .blocks import find_blocks
from .checkpoint import save_checkpoint
from .coupling import Coupling, gc_paused
from .coupling import analyze as analyze_graph
from .criterion import Criterion, Precomputed, criterion_name, get_criterion
from .errors import PlanError, RatioError
from .latency import LatencyOptions, measure_latency
from .plan_warnings import warn_if_thin
from .plans import Plan, check_ratio, make_plan
from .policy import attention_heads, mirror_branches, protector, sync_modules
from .progress import bisection_steps, ticker


@dataclass
class Report:
    """What a plan does to the model: parameters and GFLOPs (fxgraph.stats) before and after."""

    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    units_removed: int
    imgsz: tuple[int, int]
    blocks_removed: int = 0

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before

    @property
    def gflops_ratio(self) -> float:
        return self.gflops_after / self.gflops_before

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _repr_html_(self) -> str:
        from .display import report_html

        return report_html(self)

    def __str__(self) -> str:
        return (f"params {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.1%}), "
                f"GFLOPs@{self.imgsz[0]}x{self.imgsz[1]} {self.gflops_before:.2f} -> {self.gflops_after:.2f} "
                f"({self.gflops_ratio:.1%}), {self.units_removed} channel units removed"
                + (f", {self.blocks_removed} residual blocks removed" if self.blocks_removed else ""))


@dataclass
class Pruned:
    """A pruned model: `graph` (its FlatGraph, whose `model` is the pruned ultralytics model), the plan and report."""

    graph: fxgraph.FlatGraph
    plan: Plan
    report: Report
    source: Path | None = None
    seconds: float = 0.0  # wall time of analysis + planning + surgery (tracing excluded)

    @property
    def model(self) -> nn.Module:
        """The pruned ultralytics DetectionModel/SegmentationModel (ultralytics classes only)."""
        return self.graph.model

    def _repr_html_(self) -> str:
        """A notebook shows a pruned model as a small table: params and GFLOPs before, after, kept."""
        from .display import pruned_html

        return pruned_html(self)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, half: bool = True) -> Path:
        """Save as an ultralytics checkpoint; refuses to overwrite files, and always the source weights."""
        record = {"plan": self.plan.to_json(), "report": self.report.as_dict(),
                  "source": str(self.source) if self.source else None}
        return save_checkpoint(self.model, path, overwrite=overwrite, never=[self.source] if self.source else [],
                               half=half, record=record)


def _check_options(options: Mapping[str, Any]) -> None:
    """Refuse bad ratios before the (slow) trace."""
    if options.get("ratio") is not None:
        check_ratio(options["ratio"])
    for key, r in (options.get("layer_ratios") or {}).items():
        check_ratio(r, f"ratio of layer {key!r}")


def _graph(model: Any, imgsz: int | tuple[int, int]) -> fxgraph.FlatGraph:
    return model if isinstance(model, fxgraph.FlatGraph) else fxgraph.trace(model, imgsz=imgsz)


def _source_path(model: Any) -> Path | None:
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".pt"):
        return Path(model)
    if model is None:
        try:
            return fxgraph.embedded_weights()
        except fxgraph.ModelLoadError:
            return None
    path = getattr(model, "ckpt_path", None) or getattr(getattr(model, "model", None), "pt_path", None) \
        or getattr(model, "pt_path", None)
    return Path(path) if path else None


def analyze(model: Any, imgsz: int | tuple[int, int] = 640) -> Coupling:
    """The channel groups of a YOLO model (a FlatGraph, or anything fxgraph.trace accepts)."""
    g = _graph(model, imgsz)
    return analyze_graph(g, protect=protector(g), heads=attention_heads(g.model))


def plan(
    model: Any,
    *,
    ratio: float | None = None,
    layer_ratios: Mapping[int | str, float] | None = None,
    scope: str | Iterable[int] = "all",
    criterion: str | Criterion = "l2",
    min_channels: int | None = None,
    round_to: int = 8,
    global_ranking: bool = True,
    threshold: float | None = None,
    imgsz: int | tuple[int, int] = 640,
    coupling: Coupling | None = None,
    blocks: int | Iterable[str] | None = None,
    depth_ratio: float | None = None,
) -> Plan:
    """Make a pruning plan for `model` (see pruning.plans.make_plan for the channel options).  `min_channels` not
    given: 1, with a `ThinPlanWarning` when a layer is left below 8 channels (pruning.plan_warnings).

    Depth: `blocks` (a count of the weakest removable residual blocks, or their names such as 'model.4.m.0') or
    `depth_ratio` (that fraction of the removable blocks), ranked by the criterion's block score
    (pruning.depth_plan); combinable with `ratio` / `layer_ratios`, which are scored on the same pass."""
    _check_options({"ratio": ratio, "layer_ratios": layer_ratios})
    depth = blocks is not None or depth_ratio is not None
    if depth and depth_ratio is not None:
        check_ratio(depth_ratio, "depth_ratio")
    criterion = get_criterion(criterion)  # an unknown name, or one that needs data, fails before any tracing
    g = _graph(model, imgsz)
    coupling = coupling or analyze(g)
    floor = 1 if min_channels is None else min_channels
    if not depth:
        chosen = make_plan(g, coupling, ratio=ratio, layer_ratios=layer_ratios, scope=scope, criterion=criterion,
                           min_channels=floor, round_to=round_to, global_ranking=global_ranking,
                           threshold=threshold)
    else:
        from .depth_plan import choose_blocks, shared_scores

        width_criterion, block_score = shared_scores(g, coupling, criterion)
        width = make_plan(g, coupling,
                          ratio=ratio if ratio is not None or layer_ratios or threshold is not None else 0.0,
                          layer_ratios=layer_ratios, scope=scope, criterion=width_criterion, min_channels=floor,
                          round_to=round_to, global_ranking=global_ranking, threshold=threshold)
        picked = choose_blocks(g, blocks, depth_ratio, block_score, scope=scope)
        width.settings.update({"blocks": blocks if blocks is None or isinstance(blocks, int) else list(blocks),
                               "depth_ratio": depth_ratio})
        chosen = dataclasses.replace(width, blocks=tuple(picked))
    if min_channels is None:
        warn_if_thin(chosen)
    return chosen


def dry_run(model: Any, plan: Plan | None = None, *, imgsz: int | tuple[int, int] = 640, **options) -> Report:
    """The params and GFLOPs `plan` (or a plan made from `options`) would leave, without touching `model`."""
    _check_options(options)
    g = _graph(model, imgsz)
    coupling = analyze(g)
    return _dry_report(g, coupling, plan or _plan_from(g, coupling, options))


def _plan_from(g: fxgraph.FlatGraph, coupling: Coupling, options: Mapping[str, Any]) -> Plan:
    """The plan `options` describe (ratio=..., criterion=...), for dry_run and prune called without a plan."""
    return plan(g, coupling=coupling, **options)


def _dry_report(g: fxgraph.FlatGraph, coupling: Coupling, chosen: Plan) -> Report:
    gm = copy.deepcopy(g.module)
    surgery.apply(gm, None, coupling, chosen, mirror=mirror_branches)
    if chosen.blocks:
        depth.remove_blocks(gm, None, find_blocks(dataclasses.replace(g, module=gm)), chosen.blocks)
    return Report(stats.num_params(g), stats.num_params(gm), stats.gflops(g), stats.gflops(gm),
                  chosen.num_removed, g.imgsz, len(chosen.blocks))


TARGET_METRICS = ("gflops", "params", "latency")


def plan_for_target(
    model: Any,
    target: float,
    *,
    metric: str = "gflops",
    scope: str | Iterable[int] = "all",
    criterion: str | Criterion = "l2",
    min_channels: int | None = None,
    round_to: int = 8,
    imgsz: int | tuple[int, int] = 640,
    coupling: Coupling | None = None,
    resolution: float = 1e-3,
    latency: LatencyOptions | None = None,
    max_ratio: float = 0.99,
    depth: str = "never",
) -> tuple[Plan, Report]:
    """The smallest globally ranked plan that removes at least `target` of the model's GFLOPs (or params, latency);
    for `GroupwiseScores` (HSIC-Lasso) the same fraction of every group (rounded per group as `make_plan` spreads
    it, so the removed share grows one group step at a time), bisected the same way.

    metric="latency": target=0.5 means at most half the unpruned model's latency measured under `latency`
    (pruning.latency; default onnxruntime CPU at 640).  Each candidate is cut on a copy and measured interleaved
    with the unpruned model in one call (minimum of the repeats), so the ratio holds on a noisy machine; this
    bisection measures the real deployed graph, where a per-layer latency table (HALP) would miss fusion and
    layout effects and cost a table per device; use a coarser `resolution` (e.g. 0.02) as each step measures.

    The criterion is scored once; the channel ratio is then bisected in [0, `max_ratio`] to `resolution` with dry
    runs (surgery on a copy, well under a second each at small image sizes).  Raises PlanError when even
    `max_ratio` of the channels, within `scope` and `min_channels`, cannot remove `target`.  Returns the plan and
    its dry-run report.  `min_channels` not given: 1, with a `ThinPlanWarning` when the plan leaves a layer below 8.

    depth="auto" searches channels and residual blocks together (pruning.depth_plan.search_target: per step,
    whichever removes more of `metric` per unit of score lost); depth="only" removes the weakest blocks alone.
    """
    floor_given, min_channels = min_channels is not None, 1 if min_channels is None else min_channels
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0.0 < float(target) < 1.0:
        raise RatioError(f"target must be a fraction of {metric} to remove in (0, 1); got {target!r}")
    if metric not in TARGET_METRICS:
        raise PlanError(f"metric must be one of {', '.join(TARGET_METRICS)}; got {metric!r}")
    if depth not in ("never", "auto", "only"):
        raise PlanError(f"depth must be 'never', 'auto' or 'only'; got {depth!r}")
    crit = get_criterion(criterion)  # before any tracing
    g = _graph(model, imgsz)
    coupling = coupling or analyze(g)
    if depth != "never":
        from .depth_plan import search_target

        def removed(p: Plan) -> float:
            if metric == "latency":
                return _latency_removed(g, coupling, p, latency or LatencyOptions())
            report = _dry_report(g, coupling, p)
            return 1 - (report.gflops_ratio if metric == "gflops" else report.params_ratio)

        found = search_target(g, coupling, float(target), removed, criterion=crit, depth=depth, scope=scope,
                              min_channels=min_channels, round_to=round_to)
        if not floor_given:
            warn_if_thin(found)
        return found, _dry_report(g, coupling, found)
    scores = crit if isinstance(crit, Precomputed) else Precomputed(crit(g, coupling), criterion_name(crit))

    def attempt(ratio: float) -> tuple[Plan, Report, float]:
        p = make_plan(g, coupling, ratio=ratio, scope=scope, criterion=scores,
                      min_channels=min_channels, round_to=round_to)
        report = _dry_report(g, coupling, p)
        if metric == "latency":
            return p, report, _latency_removed(g, coupling, p, latency or LatencyOptions())
        return p, report, 1 - (report.gflops_ratio if metric == "gflops" else report.params_ratio)

    check_ratio(max_ratio, "max_ratio")
    lo, hi = 0.0, max_ratio
    best = attempt(hi)
    if best[2] < target:
        within = f" with {max_ratio:.0%} of the channels" if max_ratio < 0.99 else ""
        raise PlanError(f"cannot remove {target:.1%} of {metric}: at most {best[2]:.1%} in scope {scope!r}{within} "
                        f"with min_channels={min_channels}; widen the scope or lower the target")
    tick = ticker("latency bisection", bisection_steps(hi - lo, resolution), enabled=metric == "latency")
    while hi - lo > resolution:
        mid = (lo + hi) / 2
        found = attempt(mid)
        if found[2] >= target:
            hi, best = mid, found
        else:
            lo = mid
        tick()
    if not floor_given:
        warn_if_thin(best[0])
    return best[0], best[1]


def _latency_removed(g: fxgraph.FlatGraph, coupling: Coupling, chosen: Plan, options: LatencyOptions) -> float:
    """1 - latency(pruned) / latency(unpruned), both measured interleaved in one call (minimum of the repeats)."""
    gm, model = copy.deepcopy(g.module), copy.deepcopy(g.model)
    surgery.apply(gm, model, coupling, chosen, sync=sync_modules)
    if chosen.blocks:
        depth.remove_blocks(gm, model, find_blocks(dataclasses.replace(g, module=gm, model=model)), chosen.blocks)
    base, cut = measure_latency([g.model, model], options)
    return 1 - cut.min_ms / base.min_ms


def prune(model: Any, plan: Plan | None = None, *, imgsz: int | tuple[int, int] = 640, inplace: bool = False,
          **options) -> Pruned:
    """Remove the channels of `plan` (or of a plan made from `options`: ratio=..., criterion=...).

    `model`: a FlatGraph, a `YOLO`, an ultralytics model, a .pt/.yaml path, or None (the embedded model).  The
    caller's objects and files are not modified (unless `inplace` with a FlatGraph).  Returns a `Pruned` whose
    graph module and ultralytics model are both cut.
    """
    _check_options(options)
    g = _graph(model, imgsz)
    if isinstance(model, fxgraph.FlatGraph) and not inplace:
        g = dataclasses.replace(g, module=copy.deepcopy(g.module), model=copy.deepcopy(g.model))
    start = time.perf_counter()
    with gc_paused():
        params_before, gflops_before = stats.num_params(g), stats.gflops(g)
        coupling = analyze(g)
        chosen = plan or _plan_from(g, coupling, options)
        surgery.apply(g.module, g.model, coupling, chosen, sync=sync_modules, mirror=mirror_branches)
        del coupling
        if chosen.blocks:  # block lists shrink and renumber: trace the cut model again so names match it
            depth.remove_blocks(g.module, g.model, find_blocks(g), chosen.blocks)
            branch = g.facts.branch if g.facts is not None else None
            g = fxgraph.trace(g.model, imgsz=g.imgsz, fold_bn=g.bn_folded, device=g.device, branch=branch).to(g.dtype)
    seconds = time.perf_counter() - start
    report = Report(params_before, stats.num_params(g), gflops_before, stats.gflops(g), chosen.num_removed, g.imgsz,
                    len(chosen.blocks))
    return Pruned(graph=g, plan=chosen, report=report, source=_source_path(model), seconds=seconds)

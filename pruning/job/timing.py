"""The job's latency: how it times a model (the `latency_*` settings), a report row's latency and speed-up, the
check before any training that a target is reachable, and a step's plan under target_metric=latency."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

import fxgraph

from ..criterion import Criterion
from ..devices import torch_device
from ..errors import PlanError, PruningError
from ..latency import LatencyOptions, measure_latency
from ..plans import Plan
from .tracecache import traced

if TYPE_CHECKING:
    from .config import Settings


def latency_options(settings: Settings) -> LatencyOptions:
    """How the job measures latency: the `latency_*` settings, torch on the configured `device`."""
    device = str(torch_device(settings.device)) if settings.latency_runtime == "torch" else "cpu"
    return LatencyOptions(imgsz=settings.latency_imgsz, runtime=settings.latency_runtime, device=device,
                          threads=settings.latency_threads, warmup=settings.latency_warmup,
                          repeats=settings.latency_repeats)


def latency_fields(model: torch.nn.Module, settings: Settings, reference: Path | None = None) -> dict[str, float]:
    """latency_ms (minimum), latency_median_ms, speedup (reference's minimum / this one's) and speedup_median (the
    same of the medians) of a report row; with a `reference` (the unpruned checkpoint) both are timed interleaved in
    one call, so the speed-up holds on a noisy machine; without one, both are 1 (the row is the reference)."""
    models = [model] if reference is None else [model, fxgraph.load_ultralytics(reference)]
    lat = measure_latency(models, latency_options(settings))
    return {"latency_ms": lat[0].min_ms, "latency_median_ms": lat[0].median_ms,
            "speedup": lat[-1].min_ms / lat[0].min_ms, "speedup_median": lat[-1].median_ms / lat[0].median_ms}


def check_reachable(settings: Settings, target: float | None, metric: str, scope: str) -> None:
    """Before any training: refuse a `latency_imgsz` that is not a multiple of the model's largest stride, and a
    `target` fraction of `metric` that `scope` cannot reach (None: no target to check).  The model (`pretrained`,
    or `model` built from its yaml) is cut by the largest plan the scope and `min_channels` allow, a dry run for
    params/GFLOPs, timed against itself uncut for latency: what can be removed depends on the architecture, not on
    the weights or the criterion."""
    from ..api import plan_for_target

    source = settings.pretrained or settings.model
    graph = traced(source, settings.imgsz) if Path(source).suffix == ".pt" and Path(source).is_file() else \
        fxgraph.trace(source, settings.imgsz)  # a checkpoint: the trace preflight made (tracecache)
    stride = int(max(graph.stride))
    if settings.latency_imgsz % stride:
        raise PruningError(f"latency_imgsz={settings.latency_imgsz} must be a multiple of the model's stride "
                           f"{stride}, e.g. {max(stride, settings.latency_imgsz // stride * stride)}")
    if target is not None:
        plan_for_target(graph, target, metric=metric, scope=scope, criterion="random",
                        min_channels=settings.min_channels, round_to=settings.round_to, resolution=1.0,
                        latency=latency_options(settings))  # the largest plan only


def latency_step_plan(graph: fxgraph.FlatGraph, criterion: Criterion, settings: Settings, speedup: float) -> Plan:
    """A step's plan under target_metric=latency: `step_ratio` of the remaining channels, or fewer when fewer
    already bring the latency to the target.  `speedup` is the current model's over the unpruned one (its report
    row); the fraction of the current latency still to remove is 1 - (1 - target) * speedup, and the channel
    ratio that removes it is bisected in [0, step_ratio], each candidate cut and timed against `graph`
    (pruning.plan_for_target)."""
    from ..api import plan, plan_for_target

    s = settings
    options = dict(scope=s.scope, criterion=criterion, min_channels=s.min_channels, round_to=s.round_to)
    remaining = 1 - (1 - s.target) * speedup
    if remaining > 0:
        try:
            return plan_for_target(graph, remaining, metric="latency", latency=latency_options(s),
                                   max_ratio=s.step_ratio, resolution=max(s.step_ratio / 16, 1e-3), **options)[0]
        except PlanError:  # step_ratio alone does not reach the target: take the whole step
            pass
    return plan(graph, ratio=s.step_ratio, **options)

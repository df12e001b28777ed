"""pruning.measure: warm-up, interleaved repeats, min and median; latency as a plan_for_target metric (fake clock)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import pruning
from pruning.measure import LatencyOptions, measure_latency

from conftest import cached_trace


class FakeClock:
    """A clock that only advances when a model runs: each forward adds its cost in seconds."""

    def __init__(self) -> None:
        self.now, self.log = 0.0, []

    def __call__(self) -> float:
        return self.now


class Costly(nn.Module):
    """A model whose forward advances `clock` by the next of `costs` (ms) and logs its name."""

    def __init__(self, name: str, costs: list[float], clock: FakeClock) -> None:
        super().__init__()
        self.name, self.costs, self.clock, self.calls = name, costs, clock, 0
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        self.clock.log.append(self.name)
        self.clock.now += self.costs[self.calls] / 1000
        self.calls += 1
        return self.conv(x)

    def __deepcopy__(self, memo):  # the measured copy shares the clock (what a real model shares: time)
        new = Costly(self.name, self.costs, self.clock)
        new.load_state_dict(self.state_dict())
        return new


def test_latency_warms_up_interleaves_and_reports_min_and_median():
    clock = FakeClock()
    a = Costly("a", [100.0, 100.0, 5.0, 3.0, 4.0], clock)  # two slow warm-up runs, then 5, 3, 4
    b = Costly("b", [100.0, 100.0, 9.0, 7.0, 8.0], clock)
    opts = LatencyOptions(imgsz=8, runtime="torch", warmup=2, repeats=3, clock=clock)
    la, lb = measure_latency([a, b], opts)
    assert clock.log == ["a", "a", "b", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotated interleaving
    assert la.runs_ms == pytest.approx((5.0, 3.0, 4.0)) and lb.runs_ms == pytest.approx((9.0, 7.0, 8.0))
    assert (la.min_ms, la.median_ms) == pytest.approx((3.0, 4.0))  # warm-up runs (100 ms) excluded
    assert (lb.min_ms, lb.median_ms) == pytest.approx((7.0, 8.0))
    assert a.calls == 0  # the caller's model is not the one run


def test_latency_refuses_an_unknown_runtime():
    with pytest.raises(pruning.PruningError, match="latency runtime must be one of"):
        measure_latency([nn.Conv2d(3, 2, 1)], LatencyOptions(runtime="tensorrt"))


def test_onnxruntime_latency_is_positive_and_leaves_the_model_alone():
    pytest.importorskip("onnxruntime")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).double().train()
    (lat,) = measure_latency([net], LatencyOptions(imgsz=32, warmup=1, repeats=3))
    assert 0 < lat.min_ms <= lat.median_ms and len(lat.runs_ms) == 3
    assert net.training and next(net.parameters()).dtype == torch.float64


def _params_clock(g):
    """A copy of `g` whose model's forward costs its parameter count in ms on a fake clock."""
    clock = FakeClock()
    g = dataclasses.replace(g, module=copy.deepcopy(g.module), model=copy.deepcopy(g.model))

    def hook(module, args):
        clock.log.append(1)
        clock.now += sum(p.numel() for p in module.parameters()) / 1e6
    g.model.register_forward_pre_hook(hook)
    return g, clock


def test_latency_target_finds_a_plan_at_or_below_the_target():
    g, clock = _params_clock(cached_trace("yolov8n.yaml", 64))
    opts = LatencyOptions(imgsz=64, runtime="torch", warmup=0, repeats=1, clock=clock)
    plan, report = pruning.plan_for_target(g, 0.5, metric="latency", criterion="l1", latency=opts, resolution=0.02)
    assert 1 - report.params_ratio >= 0.5  # fake latency = params: at or below half the unpruned
    smaller = pruning.make_plan(g, pruning.analyze(g), ratio=plan.settings["ratio"] - 0.03, criterion="l1")
    assert 1 - pruning.dry_run(g, smaller).params_ratio < 0.5  # and not far beyond it


def test_unreachable_latency_target_is_refused_after_one_measurement():
    g, clock = _params_clock(cached_trace("yolov8n.yaml", 64))
    opts = LatencyOptions(imgsz=64, runtime="torch", warmup=0, repeats=1, clock=clock)
    with pytest.raises(pruning.PlanError, match="cannot remove 95.0% of latency"):
        pruning.plan_for_target(g, 0.95, metric="latency", scope="backbone", latency=opts)
    assert len(clock.log) == 2  # the unpruned and the largest plan, once each: no bisection, nothing else run

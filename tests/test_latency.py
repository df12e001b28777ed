"""pruning.latency: warm-up, interleaved repeats, min and median; latency as a plan_for_target metric (fake clock)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import pruning
from pruning.criteria import Precomputed
from pruning.latency import LatencyOptions, measure_latency

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


@pytest.mark.parametrize("opts, says", [
    (LatencyOptions(runtime="torch", dtype="float8"), "latency dtype must be one of"),
    (LatencyOptions(dtype="float16"), "needs runtime='torch'"),
    (LatencyOptions(runtime="torch", device="cpu", cuda_graph=True), "cuda_graph=True needs runtime='torch' on a CUDA"),
    (LatencyOptions(runtime="onnxruntime", cuda_graph=True), "cuda_graph=True needs runtime='torch' on a CUDA"),
    (LatencyOptions(runtime="torch", batch=0), "latency batch must be at least 1"),
])
def test_latency_refuses_an_unusable_dtype(opts, says):
    with pytest.raises(pruning.PruningError, match=says):
        measure_latency([nn.Conv2d(3, 2, 1)], opts)


def test_torch_latency_runs_the_model_in_the_asked_dtype():
    """dtype reaches the model and its input (half precision as deployed on a GPU; bfloat16 runs on any CPU)."""
    seen = []
    net = nn.Conv2d(3, 2, 1)
    net.register_forward_pre_hook(lambda m, args: seen.append((m.weight.dtype, args[0].dtype)))
    measure_latency([net], LatencyOptions(imgsz=8, runtime="torch", dtype="bfloat16", warmup=0, repeats=1))
    assert seen == [(torch.bfloat16, torch.bfloat16)] and net.weight.dtype == torch.float32
    shapes = []
    net.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    measure_latency([net], LatencyOptions(imgsz=8, runtime="torch", batch=3, warmup=0, repeats=1))
    assert shapes == [(3, 3, 8, 8)]  # `batch` images per timed forward


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


# --- the job: target_metric=latency -------------------------------------------------------------------------------

def _fake_runtime(monkeypatch) -> FakeClock:
    """Every latency the job measures costs the model's parameter count (1 ms per million) on a fake clock."""
    import pruning.latency
    from pruning.job import timing

    clock = FakeClock()

    def runner(model, opts):
        n = sum(p.numel() for p in model.parameters())

        def run():
            clock.log.append(n)
            clock.now += n / 1e9
        return run

    monkeypatch.setattr(pruning.latency, "_torch_runner", runner)
    real = timing.latency_options
    monkeypatch.setattr(timing, "latency_options", lambda s: dataclasses.replace(real(s), clock=clock))
    return clock


LATENCY_JOB = dict(model="yolov8n.yaml", pretrain_epochs=1, target_metric="latency", target=0.5, scope="all",
                   latency_runtime="torch", latency_imgsz=64, latency_warmup=0, latency_repeats=1, imgsz=64,
                   export="none", prune_depth="never", max_steps=4)


def _fake_ms(models) -> list[float]:
    """What the fake runtime gives each of `models`, in ms."""
    return [sum(p.numel() for p in m.parameters()) / 1e6 for m in models]


@pytest.mark.parametrize("speedup", [1.0, 1.25])
def test_a_latency_step_that_reaches_the_target_measures_at_or_below_it(monkeypatch, speedup):
    _fake_runtime(monkeypatch)
    g = cached_trace("yolov8n.yaml", 64)
    scores = pruning.get_criterion("l1")(g, pruning.analyze(g))
    job = pruning.Pruner(step_ratio=0.9, **LATENCY_JOB)
    job.state = {"rows": [{"speedup": 1.0}, {"speedup": speedup}]}  # the current model is `speedup` x faster
    plan = job.plan(g, scores, 1)
    base, cut = _fake_ms([g.model, pruning.prune(g, plan).model])
    allowed = (1 - 0.5) * speedup  # of the current model's latency: half the unpruned one's
    assert cut <= allowed * base
    assert plan.settings["ratio"] < 0.9  # bisected below the whole step ...
    fewer = pruning.make_plan(g, pruning.analyze(g), ratio=plan.settings["ratio"] - 0.9 / 16 - 0.01,
                              criterion=Precomputed(scores, "l1"), min_channels=job.settings.min_channels,
                              round_to=job.settings.round_to)
    assert _fake_ms([pruning.prune(g, fewer).model])[0] > allowed * base  # ... to about the least that reaches it


def test_a_latency_step_that_cannot_reach_the_target_takes_the_whole_step(monkeypatch):
    _fake_runtime(monkeypatch)
    g = cached_trace("yolov8n.yaml", 64)
    scores = pruning.get_criterion("l1")(g, pruning.analyze(g))
    job = pruning.Pruner(step_ratio=0.1, **LATENCY_JOB)
    job.state = {"rows": [{"speedup": 1.0}]}
    assert job.plan(g, scores, 1).settings["ratio"] == 0.1


def test_the_job_stops_on_the_interleaved_speed_up():
    job = pruning.Pruner(step_ratio=0.1, **LATENCY_JOB)
    row = {"params": 1, "gflops": 1.0, "map50_95": 0.5, "latency_ms": 10.0}
    job.state = {"rows": [{**row, "speedup": 1.0}, {**row, "latency_ms": 4.0, "speedup": 1.9}], "step": 1}
    assert job._stop_reason() is None  # 1 - 1/1.9 = 47% < 50%, although 4 ms is 40% of 10 ms
    job.state["rows"][-1]["speedup"] = 2.05
    assert job._stop_reason().startswith("target reached: 51.2% of latency removed")


def test_an_unreachable_latency_target_is_refused_before_training_or_writing(monkeypatch, tmp_path):
    from pruning.job import finetuning, pipeline

    clock = _fake_runtime(monkeypatch)

    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing the target")
    for module in (pipeline, finetuning):
        monkeypatch.setattr(module, "train_to", no_training)
    monkeypatch.setattr(pipeline, "initial_weights", no_training)
    job = pruning.Pruner(**{**LATENCY_JOB, "target": 0.95, "scope": "backbone", "project": str(tmp_path / "runs")})
    with pytest.raises(pruning.PlanError, match="cannot remove 95.0% of latency"):
        job.run()
    assert len(clock.log) == 2  # the model and its largest backbone cut, timed once each
    assert not (tmp_path / "runs").exists()


def test_a_latency_size_the_model_cannot_take_is_refused_before_anything(tmp_path):
    job = pruning.Pruner(**{**LATENCY_JOB, "latency_imgsz": 100, "project": str(tmp_path / "runs")})
    with pytest.raises(pruning.PruningError, match="latency_imgsz=100 must be a multiple of the model's stride 32"):
        job.run()
    assert not (tmp_path / "runs").exists()


def test_a_report_row_times_the_checkpoint_against_the_unpruned_one(monkeypatch, tmp_path):
    from pruning.job.config import load_config
    from pruning.job.timing import latency_fields

    _fake_runtime(monkeypatch)
    g = cached_trace("yolov8n.yaml", 64)
    ref = pruning.save_checkpoint(g.model, tmp_path / "step0.pt", half=False)
    cut = pruning.prune(g, ratio=0.5, criterion="l1").model
    row = latency_fields(cut, load_config(None, LATENCY_JOB), reference=ref)
    base, mine = _fake_ms([g.model, cut])
    assert row["latency_ms"] == pytest.approx(mine) and row["latency_median_ms"] == pytest.approx(mine)
    assert row["speedup"] == pytest.approx(base / mine) and row["speedup_median"] == pytest.approx(base / mine)
    assert latency_fields(cut, load_config(None, LATENCY_JOB))["speedup"] == 1.0

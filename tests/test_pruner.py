"""The workflow as an object: `pruning.Pruner(...).run()` equals the CLI, subclasses override stages, and the
criterion-bound pruners equal `pruning.prune(g, pruning.plan(g, criterion=...))`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fxgraph
import pruning
from pruning import save_checkpoint
from pruning.criteria import HSIC, DetDSHAP, load_calibration
from pruning.job.config import ConfigError
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(data yaml, random-weight yolov8n-seg checkpoint) at 64 px."""
    root = tmp_path_factory.mktemp("pruner")
    data = make_shapes_dataset(root / "data", ShapesConfig(n_train=8, n_val=4, imgsz=64, seed=1))
    from ultralytics.nn.tasks import SegmentationModel

    torch.manual_seed(0)
    model = SegmentationModel("yolov8n-seg.yaml", nc=4, verbose=False)  # the classes of the shapes data
    weights = save_checkpoint(model, root / "w.pt", half=False)
    return data, weights


def _overrides(data: Path) -> dict:
    return dict(data=str(data), imgsz=64, batch=4, pretrain_epochs=0, criterion="l1", step_ratio=0.2, target=0.1,
                epochs_per_step=0, final_epochs=0, calib_images=4, project="runs/prune", name="exp", latency_imgsz=64,
                latency_repeats=2, scope="backbone", target_metric="params", prune_depth="never", max_steps=4)


def _report_without_timings(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    for row in report["steps"]:
        for key in ("latency_ms", "latency_median_ms", "speedup", "speedup_median"):
            row.pop(key)
    report["settings"]["pretrained"] = Path(report["settings"]["pretrained"]).name
    return report


def test_run_writes_what_the_cli_writes(tiny, tmp_path, monkeypatch):
    data, weights = tiny
    (tmp_path / "api").mkdir()
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "api")
    out_api = pruning.Pruner(pretrained=weights, **_overrides(data)).run()
    args = [f"{k}={v}" for k, v in _overrides(data).items()]
    res = subprocess.run([sys.executable, "-m", "pruning", "--pretrained", str(weights), *args], cwd=tmp_path / "cli",
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out_cli = tmp_path / "cli" / "runs/prune/exp"
    names = lambda out: sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "val" not in p.parts)
    assert names(out_api.resolve()) == names(out_cli)
    assert "weights/final.onnx" in names(out_cli) or any(n.endswith(".onnx") for n in names(out_cli))
    assert _report_without_timings(out_api) == _report_without_timings(out_cli)


class LongLastStep(pruning.Pruner):
    """The README's example: more fine-tuning epochs on the final step."""

    calls: list = []

    def finetune(self, weights, step, epochs):
        epochs = 2 if step == "final" else epochs
        LongLastStep.calls.append((step, epochs))
        return super().finetune(weights, step, epochs)


def test_a_subclass_override_is_used_and_recorded(tiny, tmp_path):
    data, weights = tiny
    over = {**_overrides(data), "project": str(tmp_path / "runs"), "final_epochs": 1, "export": "none"}
    out = LongLastStep(pretrained=weights, **over).run()
    state = json.loads((out / "state.json").read_text())
    assert LongLastStep.calls == [(1, 0), ("final", 2)]
    finetunes = [s for s in state["stages"] if s["stage"] == "finetune"]
    assert finetunes and all(s["by"] == "LongLastStep.finetune" for s in finetunes)
    assert {s["by"] for s in state["stages"] if s["stage"] == "prune"} == {"PruningJob.prune"}
    epochs = (out / "final" / "results.csv").read_text().strip().splitlines()[1:]
    assert len(epochs) == 2  # the final fine-tune really ran 2 epochs, not final_epochs=1
    assert [r["step"] for r in state["rows"]] == [0, 1, "final"]


@pytest.mark.parametrize("bad, message", [
    ({"colour": "red"}, "unknown setting 'colour'"),
    ({"step_ratio": 2}, r"step_ratio=2 must be a number in \[0, 1\)"),
    ({"criterion": "magic"}, "criterion='magic' is not one of"),
])
def test_bad_keyword_overrides_raise_our_error_naming_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        pruning.Pruner(**bad)


def test_cfg_may_be_a_dict_or_a_yaml_path(tmp_path):
    (tmp_path / "c.yaml").write_text("criterion: taylor\nimgsz: 96\n")
    assert pruning.Pruner(cfg=tmp_path / "c.yaml").settings.criterion == "taylor"
    p = pruning.Pruner(cfg={"criterion": "hsic"}, imgsz=32)
    assert (p.settings.criterion, p.settings.imgsz) == ("hsic", 32)


def _same(a: pruning.Pruned, b: pruning.Pruned) -> None:
    assert a.plan.remove == b.plan.remove and a.plan.num_removed > 0
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(a.graph.module(x)[0], b.graph.module(x)[0])


def test_magnitude_pruner_equals_prune_of_plan(tiny):
    g = fxgraph.trace(tiny[1], 64)
    for norm in (1, 2):
        ours = pruning.MagnitudePruner(norm=norm, imgsz=64).prune(g, ratio=0.3)
        _same(ours, pruning.prune(g, pruning.plan(g, ratio=0.3, criterion=f"l{norm}")))
    target = pruning.MagnitudePruner(norm=1, imgsz=64).prune(g, target=0.3)
    plan, _ = pruning.plan_for_target(g, 0.3, criterion="l1")
    _same(target, pruning.prune(g, plan))
    with pytest.raises(pruning.PlanError, match="exactly one of ratio=, target= or threshold="):
        pruning.MagnitudePruner().prune(g, ratio=0.3, target=0.3)


def test_data_driven_pruners_equal_prune_of_plan(tiny):
    data, weights = tiny
    g = fxgraph.trace(weights, 64)
    calib = load_calibration(data, "segment", 64, 4, batch=4)
    ours = pruning.DetDSHAPPruner(data, imgsz=64, calib_images=4, boxes="labels", iou=0.01).prune(g, ratio=0.2)
    theirs = pruning.prune(g, pruning.plan(g, ratio=0.2, criterion=DetDSHAP(calib, boxes="labels", iou=0.01)))
    _same(ours, theirs)
    ours = pruning.HsicLassoPruner(data, imgsz=64, calib_images=4).prune(g, threshold=0.0)
    theirs = pruning.prune(g, pruning.plan(g, threshold=0.0, criterion=HSIC(calib)))
    _same(ours, theirs)
    with pytest.raises(pruning.PruningError, match="data=/nonexistent.yaml: no such dataset yaml"):
        pruning.HsicLassoPruner("/nonexistent.yaml")

"""The pruning pipeline end to end, its resume, its refusals, and distributed scoring (tiny data, imgsz 64)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fxgraph
from pruning import save_checkpoint
from pruning.job import pipeline, tracecache
from pruning.job.config import load_config
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("data"), ShapesConfig(n_train=8, n_val=4, imgsz=64, seed=1))


def _settings(tmp_path: Path, data: Path, **extra) -> dict:
    base = dict(model="yolov8n-seg.yaml", data=str(data), imgsz=64, batch=4, pretrain_epochs=1, criterion="l1",
                step_ratio=0.2, target=0.1, epochs_per_step=1, final_epochs=1, calib_images=4, scope="backbone",
                target_metric="params", prune_depth="never", max_steps=4,  # what these tests check, not default.yaml
                project=str(tmp_path / "runs"), name="exp", latency_imgsz=64, latency_repeats=2)
    base.update(extra)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def test_end_to_end_writes_every_artefact_and_prunes_only_the_backbone(tmp_path, tiny_data):
    out = pipeline.run(_settings(tmp_path, tiny_data))
    report = json.loads((out / "report.json").read_text())
    steps = [r["step"] for r in report["steps"]]
    assert steps == [0, 1, "final"]
    for name in ("report.md", "trend.png", "state.json", "weights/step0.pt", "weights/step1-pruned.pt",
                 "weights/step1.pt", "weights/final.pt", "weights/final.onnx"):
        assert (out / name).is_file(), name
    assert report["steps"][1]["params"] < report["steps"][0]["params"]
    assert "| 1 | l1 |" in (out / "report.md").read_text()
    before = fxgraph.load_ultralytics(out / "weights/step0.pt")
    after = fxgraph.load_ultralytics(out / "weights/final.pt")
    outs = lambda m: {n: c.out_channels for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d)}
    b, a = outs(before), outs(after)
    assert any(a[n] < b[n] for n in b if int(n.split(".")[1]) <= 9)  # the backbone lost filters
    assert all(a[n] == b[n] for n in b if int(n.split(".")[1]) >= 10)  # neck and head filters all kept
    assert json.loads((out / "state.json").read_text())["done"] is True
    assert_onnx_equals_torch(out / "weights/final.onnx", out / "weights/final.pt", 64)


def assert_onnx_equals_torch(onnx: Path, weights: Path, imgsz: int) -> None:
    """The exported graph loads in onnxruntime and gives the pruned checkpoint's outputs (pred, proto)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = [t.numpy() for t in fxgraph.trace(weights, imgsz).module(x)]
    assert [a.shape for a in got] == [b.shape for b in want]
    for a, b in zip(got, want):  # elementwise: box pixels (~100s) would hide class scores (< 1) in one scale
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_threshold_that_no_filter_reaches_stops_the_run_without_pruning(tmp_path, tiny_data, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative project (the default runs/prune) keeps training output in the run dir
    out = pipeline.run(_settings(tmp_path, tiny_data, prune_threshold=-1.0, export="none", project="runs/prune"))
    assert out.resolve() == (tmp_path / "runs/prune/exp").resolve()
    assert (out / "pretrain/weights").is_dir() and (out / "val").is_dir()
    state = json.loads((out / "state.json").read_text())
    assert state["stop"] == "no filter in scope scores <= prune_threshold=-1.0" and state["done"] is True
    assert [r["step"] for r in state["rows"]] == [0]
    assert not (out / "weights/step1-pruned.pt").exists()


def test_resume_continues_from_the_last_finished_step(tmp_path, tiny_data, monkeypatch):
    settings = _settings(tmp_path, tiny_data, target=0.9, max_steps=2, epochs_per_step=0, final_epochs=0,
                         export="none")

    class Interrupted(pipeline.PruningJob):
        def prune(self, graph, step_plan, step):
            if step == 2:
                raise KeyboardInterrupt
            return super().prune(graph, step_plan, step)

    with pytest.raises(KeyboardInterrupt):
        Interrupted.from_settings(settings).run()
    out = tmp_path / "runs" / "exp"
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 1 and not state["done"]
    assert [(r["stage"], r["step"]) for r in state["stages"]][-2:] == [("score", 2), ("plan", 2)]
    step1 = (out / "weights" / "step1-pruned.pt").stat().st_mtime_ns

    assert pipeline.run(settings.replace(resume=True)) == out
    state = json.loads((out / "state.json").read_text())
    assert state["done"] and state["step"] == 2 and [r["step"] for r in state["rows"]] == [0, 1, 2]
    assert (out / "weights" / "step1-pruned.pt").stat().st_mtime_ns == step1  # step 1 was not redone
    assert state["rows"][2]["params"] < state["rows"][1]["params"]


@pytest.mark.parametrize("args, message", [
    (["criterion=magic"], "criterion='magic' is not one of"),
    (["data=/nonexistent/data.yaml"], "no such dataset yaml"),
    (["--cfg", "MALFORMED"], "not valid YAML"),
    (["colour=red"], "unknown setting 'colour'"),
])
def test_cli_refuses_bad_settings_and_writes_nothing(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("criterion: [unclosed\n")
    args = [str(tmp_path / "bad.yaml") if a == "MALFORMED" else a for a in args]
    res = subprocess.run([sys.executable, "-m", "pruning", *args, f"project={tmp_path / 'runs'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_resume_without_a_run_is_refused(tmp_path, tiny_data):
    from pruning import PruningError

    with pytest.raises(PruningError, match="resume: .* has no state.json to continue from"):
        pipeline.run(_settings(tmp_path, tiny_data, resume=True))


def test_distributed_scoring_equals_single_process(tmp_path, tiny_data):
    weights = save_checkpoint(fxgraph.load_ultralytics("yolov8n-seg.yaml"), tmp_path / "w.pt", half=False)
    common = ["score", "--pretrained", str(weights), f"data={tiny_data}", "imgsz=64", "calib_images=8", "batch=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for criterion in ("taylor",):  # all-reduced sums, the path of detdshap too
        single = tmp_path / f"{criterion}-single.json"
        multi = tmp_path / f"{criterion}-multi.json"
        res = subprocess.run([sys.executable, "-m", "pruning", *common, f"criterion={criterion}", "--out", str(single)],
                             cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_port", str(29500 + os.getpid() % 1000), "-m", "pruning", *common,
                              f"criterion={criterion}", "--out", str(multi)],
                             cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "(2 process(es))" in res.stdout
        a, b = json.loads(single.read_text()), json.loads(multi.read_text())
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(torch.tensor(a[k]), torch.tensor(b[k]), rtol=1e-6, atol=1e-9), (criterion, k)
        assert any(sum(v) > 0 for v in a.values())


def test_compare_prunes_every_criterion_to_the_same_gflops_target_and_writes_table_and_plot(tmp_path, tiny_data):
    from pruning.job.compare import compare

    settings = _settings(tmp_path, tiny_data, compare_epochs=0, compare_criteria="[l1,random]",
                         compare_targets="[0.3]", compare_seeds="[0]")
    out = compare(settings)
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [(r["criterion"], r["target"]) for r in rows] == [("unpruned", 0.0), ("l1", 0.3), ("random", 0.3)]
    base = rows[0]["gflops"]
    for r in rows[1:]:  # each criterion reaches the target, by at most a few channels more than needed
        assert 0.3 <= 1 - r["gflops"] / base < 0.32, r
        assert 0 < r["channel_ratio"] < 1
    assert rows[1]["params"] != rows[2]["params"]  # different criteria, different channels
    md = (out / "compare.md").read_text()
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG" and "| random | 0.30 |" in md
    assert "| l1 | " in md.split("mAP50-95 kept")[1]


def test_plan_for_target_finds_the_smallest_plan_and_refuses_an_unreachable_target():
    import pruning

    g = fxgraph.trace(fxgraph.load_ultralytics("yolov8n.yaml"), imgsz=64)
    coupling = pruning.analyze(g)
    plan, report = pruning.plan_for_target(g, 0.25, criterion="l1", coupling=coupling, round_to=1)
    assert 1 - report.gflops_ratio >= 0.25
    assert plan.settings["criterion"] == "l1"  # scored once, replayed under its own name
    smaller = pruning.make_plan(g, coupling, ratio=plan.settings["ratio"] - 2e-3, criterion="l1", round_to=1)
    assert 1 - pruning.dry_run(g, smaller).gflops_ratio < 0.25  # a slightly smaller ratio misses the target
    with pytest.raises(pruning.PlanError, match="cannot remove 90.0% of gflops"):
        pruning.plan_for_target(g, 0.9, scope="backbone", coupling=coupling)
    with pytest.raises(pruning.RatioError, match="target must be a fraction"):
        pruning.plan_for_target(g, 1.5, coupling=coupling)


def test_traced_checkpoint_is_reused_until_the_file_changes(tmp_path):
    model = fxgraph.load_ultralytics("yolov8n.yaml")
    path = save_checkpoint(model, tmp_path / "w.pt", half=False)
    first = tracecache.traced(path, 64)
    assert tracecache.traced(path, 64) is first
    shutil.copyfile(path, tmp_path / "copy.pt")  # the run's step0.pt is a byte copy of the weights: reused
    assert tracecache.traced(tmp_path / "copy.pt", 64) is first
    with open(path, "ab") as f:  # the file changed -> traced anew
        f.write(b"\0")
    second = tracecache.traced(path, 64)
    assert second is not first
    assert tracecache.traced(path, 128) is not second  # another image size is another graph


def test_compare_refuses_an_unreachable_target_before_training_or_writing(tmp_path, tiny_data):
    from pruning import PlanError
    from pruning.job.compare import compare

    settings = _settings(tmp_path, tiny_data, compare_scope="backbone", compare_targets="[0.2,0.9]")
    with pytest.raises(PlanError, match="cannot remove 90.0% of gflops: at most .* in scope 'backbone'"):
        compare(settings)
    assert not (tmp_path / "runs").exists()


def test_export_onnx_without_onnx_fails_in_the_first_second_and_writes_nothing(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None; from pruning.job.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # onnx hidden, as on a machine where it is not installed
    res = subprocess.run([sys.executable, "-c", code, "export=onnx", f"project={tmp_path / 'runs'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "export=onnx needs the onnx package" in res.stderr and "pip install" in res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []

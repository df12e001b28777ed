"""benchmarks/prune_vs_torch_pruning.py: Torch-Pruning's C2f_v2/C3k2_v2 replacement keeps the function (so the
comparison is fair), the head layers it is told to ignore come from the model, and --append merges by key."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import fxgraph
from conftest import randomize_batchnorm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import prune_vs_torch_pruning as bench  # noqa: E402


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo26n.yaml"])
def test_c3k2_replacement_preserves_outputs(name):
    """C3k2 (Bottleneck, C3k and YOLO26's attention blocks) -> C3k2_v2 with the same weights, BN statistics
    included: equal outputs in float64 on every branch ultralytics predicts with."""
    torch.manual_seed(0)
    model = fxgraph.load_ultralytics(name)
    randomize_batchnorm(model, torch.Generator().manual_seed(1))  # so that swapped BN halves would show
    replaced = copy.deepcopy(model)
    C2f_v2 = bench.c2f_v2_class()
    counts = bench.replace_split_blocks(replaced, C2f_v2, bench.c3k2_v2_class(C2f_v2))
    assert counts == {"C3k2": bench.block_types(model)["C3k2"]}
    assert "C3k2" not in bench.block_types(replaced) and bench.block_types(replaced)["C3k"] == \
        bench.block_types(model)["C3k"]
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(fxgraph.reference_outputs(model.double().eval(), x),
                        fxgraph.reference_outputs(replaced.double().eval(), x)):
            assert a.shape == b.shape
            assert float((a - b).abs().max()) < 1e-9
    assert all(bn.eps == 1e-3 for bn in replaced.modules() if isinstance(bn, torch.nn.BatchNorm2d))


def _last_convs(head, *attrs):
    return [f"model.{head.i}.{a}.{level}.{len(b) - 1}" for a in attrs for level, b in enumerate(getattr(head, a))]


@pytest.mark.parametrize("name, attrs, dfl", [
    ("yolov8n.yaml", ("cv2", "cv3"), True),
    ("yolo26n.yaml", ("cv2", "cv3", "one2one_cv2", "one2one_cv3"), False),  # two branches, reg_max 1: no DFL
    ("yolov10n.yaml", ("cv2", "cv3", "one2one_cv2", "one2one_cv3"), True),  # both branches, whatever predict uses
    ("yolo11n-pose.yaml", ("cv2", "cv3", "cv4"), True),  # cv4: the keypoint convs
    ("yolo11n-obb.yaml", ("cv2", "cv3", "cv4"), True),  # cv4: the angle convs
])
def test_head_outputs_are_read_from_the_trace(name, attrs, dfl):
    """The layers Torch-Pruning is told to ignore are those the trace marks role=head_output, on every branch."""
    model = fxgraph.load_ultralytics(name)
    head = model.model[-1]
    expected = _last_convs(head, *attrs) + ([f"model.{head.i}.dfl.conv"] if dfl else [])
    paths = bench.head_output_paths(model)
    assert sorted(paths) == sorted(expected)
    assert bench.head_outputs(model, paths) == [model.get_submodule(p) for p in paths]


def test_attention_layers_include_area_attention():
    y26, y12 = fxgraph.load_ultralytics("yolo26n.yaml"), fxgraph.load_ultralytics("yolo12n.yaml")
    assert len(bench.attention_layers(y26)) == 2 and not bench.attention_layers(fxgraph.load_ultralytics("yolov8n.yaml"))
    assert {type(m).__name__ for m in bench.attention_layers(y12)} == {"AAttn"}


def test_c2fcib_is_replaced_keeping_its_blocks():
    """YOLOv10's C2fCIB (a C2f with CIB blocks and C2f's chunk forward) becomes a C2f_v2 holding the same CIBs."""
    model = fxgraph.load_ultralytics("yolov10n.yaml")
    replaced = copy.deepcopy(model)
    C2f_v2 = bench.c2f_v2_class()
    counts = bench.replace_split_blocks(replaced, C2f_v2, bench.c3k2_v2_class(C2f_v2))
    assert counts == {"C2f": bench.block_types(model)["C2f"], "C2fCIB": bench.block_types(model)["C2fCIB"]}
    assert bench.block_types(replaced)["CIB"] == bench.block_types(model)["CIB"]
    assert bench.replacement_error(model) < 1e-9


@pytest.fixture
def small_bench(monkeypatch):
    monkeypatch.setattr(bench, "IMGSZ", 64)
    monkeypatch.setattr(bench, "REPEATS", 1)
    return bench


@pytest.mark.parametrize("stage", ["pruning", "replacement"])
def test_a_raising_torch_pruning_is_a_failure_row(small_bench, monkeypatch, stage):
    """Torch-Pruning raising (or a replacement that changes the function) gives a row with the error and the stage;
    our rows and the benchmark go on."""
    def raising(*args, **kwargs):
        raise RuntimeError("fake failure\nsecond line")

    monkeypatch.setattr(bench, "prune_theirs" if stage == "pruning" else "replacement_error", raising)
    rows = bench.measure("yolov8n", [0.5])
    assert [r["tool"] for r in rows] == ["ours (uniform)", "ours (global)", "torch-pruning"]
    theirs = rows[-1]
    assert theirs["runs"] is False and theirs["params"] is None and theirs["failed_at"] == stage
    assert theirs["error"] == "RuntimeError: fake failure"
    assert all(r["runs"] and r["params"] < r["params_before"] for r in rows[:2])
    assert "time_ratio_vs_tp" not in rows[0]
    assert f"no at {stage}: `RuntimeError: fake failure`" in bench.markdown(rows)


def test_append_replaces_rows_of_the_same_key_and_keeps_the_rest():
    old = [{"model": "yolov8n", "ratio": 0.5, "tool": t, "v": 1} for t in ("ours (uniform)", "torch-pruning")]
    new = [{"model": "yolov8n", "ratio": 0.5, "tool": "torch-pruning", "v": 2},
           {"model": "yolo11n", "ratio": 0.5, "tool": "torch-pruning", "v": 3}]
    assert [r["v"] for r in bench.merge(old, new)] == [1, 2, 3]


def test_a_failed_row_shows_its_error_in_the_table():
    row = {"model": "yolo26n", "ratio": 0.5, "tool": "torch-pruning", "params_before": 10, "params": None,
           "gflops": None, "seconds": None, "runs": False, "keeps_blocks": False, "replaced": {"C3k2": 8},
           "error": "RuntimeError: shape | mismatch", "failed_at": "pruning"}
    line = bench.markdown([row]).splitlines()[-1]
    assert "no at pruning: `RuntimeError: shape / mismatch`" in line and "no (C3k2→C3k2_v2 ×8)" in line
    assert bench._first_line(ValueError("first\nsecond")) == "ValueError: first"

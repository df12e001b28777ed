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


def test_head_outputs_are_read_from_the_head():
    v8 = fxgraph.load_ultralytics("yolov8n.yaml")
    head = v8.model[-1]
    assert bench.head_outputs(v8) == [*(b[-1] for b in head.cv2), *(b[-1] for b in head.cv3), head.dfl]
    y26 = fxgraph.load_ultralytics("yolo26n.yaml")  # two branches, reg_max 1: no DFL
    head = y26.model[-1]
    assert bench.head_outputs(y26) == [*(b[-1] for b in head.cv2), *(b[-1] for b in head.cv3),
                                       *(b[-1] for b in head.one2one_cv2), *(b[-1] for b in head.one2one_cv3)]
    assert len(bench.attention_layers(y26)) == 2 and not bench.attention_layers(v8)


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

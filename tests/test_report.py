"""The pipeline report: a markdown row per step, JSON with every number, and a trend plot."""

from __future__ import annotations

import json

import torch

from pruning.job.measure import cpu_latency_ms
from pruning.job.report import markdown_table, write_report

ROWS = [
    {"step": 0, "criterion": "-", "params": 1000, "gflops": 2.0, "latency_ms": 5.0, "map50": 0.9, "map50_95": 0.6,
     "recall": 0.8, "f1": 0.85},
    {"step": 1, "criterion": "l1", "params": 700, "gflops": 1.5, "latency_ms": 4.0, "map50": 0.85, "map50_95": 0.55,
     "recall": 0.75, "f1": 0.8},
]


def test_markdown_has_a_row_per_step_with_formatted_numbers():
    table = markdown_table(ROWS).splitlines()
    assert len(table) == 2 + len(ROWS)
    assert table[3].startswith("| 1 | l1 | 700 | 1.500 | 4.0 | 0.850 | 0.550 |")


def test_report_files_are_written(tmp_path):
    write_report(tmp_path, ROWS, {"criterion": "l1", "model": "m.yaml"})
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["steps"][1]["params"] == 700
    md = (tmp_path / "report.md").read_text()
    assert "Removed 30.0% of parameters and 25.0% of GFLOPs" in md
    assert (tmp_path / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_is_positive_and_leaves_the_model_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).double().train()
    assert cpu_latency_ms(net, 32, runs=3, warmup=1) > 0
    assert net.training and next(net.parameters()).dtype == torch.float64


def test_compare_tables_give_kept_map_against_the_unpruned_model_and_the_fine_tuned_control(tmp_path):
    from pruning.job.compare import write_compare

    def row(criterion, target, gflops, m):
        return {**ROWS[0], "criterion": criterion, "target": target, "channel_ratio": target / 2, "gflops": gflops,
                "map50_95": m}

    rows = [row("unpruned", 0.0, 2.0, 0.6), row("unpruned+ft", 0.0, 2.0, 0.8), row("l1", 0.4, 1.2, 0.72),
            row("random", 0.4, 1.2, 0.48), row("l1", 0.5, 1.0, 0.4)]
    write_compare(tmp_path, rows, {"model": "m.yaml", "compare_scope": "all", "compare_metric": "gflops",
                                   "compare_epochs": 3})
    md = (tmp_path / "compare.md").read_text()
    against_unpruned, against_control = md.split("mAP50-95 kept")[1].split("fine-tuned for the same 3 epochs")
    assert "| l1 | 120.0% | 66.7% |" in against_unpruned and "| random | 80.0% | - |" in against_unpruned
    assert "| l1 | 90.0% | 50.0% |" in against_control and "| random | 60.0% | - |" in against_control
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"

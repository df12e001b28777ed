"""The pipeline report: a markdown row per step, JSON with every number, and a trend plot."""

from __future__ import annotations

import json

from pruning.job.report import markdown_table, removed_fraction, run_summary, summary_line, write_report

ROWS = [
    {"step": 0, "criterion": "-", "params": 1000, "gflops": 2.0, "latency_ms": 5.0, "latency_median_ms": 5.5,
     "speedup": 1.0, "map50": 0.9, "map50_95": 0.6, "recall": 0.8, "f1": 0.85},
    {"step": 1, "criterion": "l1", "params": 700, "gflops": 1.5, "latency_ms": 4.0, "latency_median_ms": 4.4,
     "speedup": 1.6, "speedup_median": 1.5, "map50": 0.85, "map50_95": 0.55, "recall": 0.75, "f1": 0.8},
]


def test_markdown_has_a_row_per_step_with_formatted_numbers():
    table = markdown_table(ROWS).splitlines()
    assert len(table) == 2 + len(ROWS)
    assert table[3].startswith("| 1 | l1 | 700 | 1.500 | 4.0 | 4.4 | 1.60× (1.50×) | 0.850 | 0.550 |")


def test_summary_line_names_the_task_metric_and_leaves_it_out_of_rows_not_validated():
    assert "mAP50-95 0.600 -> 0.550" in summary_line(ROWS)
    pose = [{**r, "task": "pose", "map50_95_pose": 0.5 - 0.1 * r["step"]} for r in ROWS]
    assert "0.500 -> 0.400" in summary_line(pose) and "0.600" not in summary_line(pose)
    bare = [{k: v for k, v in r.items() if not k.startswith("map")} for r in ROWS]
    assert summary_line(bare).startswith("Removed 30.0% of parameters and 25.0% of GFLOPs; 1.60× faster")


def test_report_files_are_written(tmp_path):
    write_report(tmp_path, ROWS, {"criterion": "l1", "model": "m.yaml"})
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["steps"][1]["params"] == 700
    md = (tmp_path / "report.md").read_text()
    assert "Removed 30.0% of parameters and 25.0% of GFLOPs" in md
    assert (tmp_path / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_states_the_latency_conditions_and_the_speed_up(tmp_path):
    settings = {"criterion": "l1", "model": "m.yaml", "imgsz": 64, "latency_imgsz": 640, "latency_runtime":
                "onnxruntime", "latency_threads": 4, "latency_warmup": 2, "latency_repeats": 8}
    write_report(tmp_path, ROWS, settings)
    md = (tmp_path / "report.md").read_text()
    first_table = md.split("\n\n")[1]
    assert "| GFLOPs@64 | latency@640 min (ms) | median (ms) | speed-up min (median) |" in first_table
    assert "| 1.00× | 0.900 |" in first_table and "| 1.60× (1.50×) | 0.850 |" in first_table
    summary = "1.60× faster than the unpruned model (4.0 ms against 6.4 ms, minima; 1.50× by the medians)."
    assert summary in md
    assert run_summary(tmp_path).endswith(summary)  # the console's last line says the same
    assert ("onnxruntime on the CPU with 4 thread(s), batch 1 at 640x640, 2 warm-up run(s), then 8 timed runs "
            "interleaved" in md)


def test_latency_removed_is_one_minus_the_inverse_interleaved_speed_up():
    assert removed_fraction(ROWS[1], ROWS[0], "latency") == 1 - 1 / 1.6  # not 1 - 4.0/5.0 from separate calls
    assert removed_fraction(ROWS[1], ROWS[0], "params") == 1 - 700 / 1000
    old = {k: v for k, v in ROWS[1].items() if k != "speedup"}  # a row written before speed-ups were recorded
    assert removed_fraction(old, ROWS[0], "latency") == 1 - 4.0 / 5.0


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


def test_the_speed_up_cell_is_the_min_ratio_with_the_median_ratio_beside_it():
    from pruning.job.report import speedup_cell

    assert speedup_cell({"speedup": 1.234, "speedup_median": 1.5}) == "1.23× (1.50×)"
    assert speedup_cell({"speedup": 1.234}) == "1.23×"  # rows from before medians were recorded
    assert speedup_cell({"latency_ms": 3.0}) == "-"


def test_the_cli_prints_the_runs_summary_with_its_speed_up_last(tmp_path, monkeypatch, capsys):
    from pruning.job import cli, pipeline

    write_report(tmp_path, ROWS, {"criterion": "l1", "model": "m.yaml"})
    monkeypatch.setattr(pipeline.PruningJob, "run", lambda self: tmp_path)
    assert cli.main(["export=none"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Removed 30.0% of parameters and 25.0% of GFLOPs; mAP50-95 0.600 -> 0.550; 1.60× faster")

"""benchmarks/prune_depth_finetune.py: mAP kept is the pruned model's mAP over the unpruned model's after the same
fine-tuning, and the headline table shows it with the speed-up, and says where depth alone cannot reach a target."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import prune_depth_finetune as bench  # noqa: E402


def _row(mode, target, after, ms, tmp_path):
    name = bench.key_of(mode, target)
    return {"mode": mode, "target": target, "gflops_removed": target, "blocks_removed": 1 if mode == "both" else 0,
            "weights": str(tmp_path / f"{name}.pt"), "after": after, "ms": ms}


@pytest.fixture
def finetuned(monkeypatch, tmp_path):
    """finetune_to/validate replaced by fakes: fine-tuning lowers a checkpoint's mAP50-95 by 0.1, so a table that read
    the mAP before fine-tuning would show."""
    maps = {}

    def fake_finetune(weights, settings, data, out, name, epochs, target):
        maps[Path(target)] = maps[Path(weights)] - 0.1
        Path(target).write_bytes(b"")
        return target

    monkeypatch.setattr(bench, "finetune_to", fake_finetune)
    monkeypatch.setattr(bench, "validate", lambda weights, *a: {"map50_95": maps[Path(weights)]})
    return maps


def test_map_kept_is_relative_to_the_unpruned_model_after_the_same_finetuning(finetuned, tmp_path):
    rows = [_row("unpruned", 0.0, 0.5, 100.0, tmp_path), _row("width", 0.4, 0.4, 80.0, tmp_path),
            {"mode": "depth", "target": 0.4, "unreachable": "cannot remove 40.0%: at most 3.3% with depth='only'"}]
    for r in rows[:2]:
        finetuned[Path(r["weights"])] = r["after"] + 0.1  # before fine-tuning: a different value
    bench.finetune_all(rows, None, tmp_path / "data.yaml", tmp_path, epochs=1)
    assert rows[1]["map_kept"] == pytest.approx(0.8) and rows[0]["map_kept"] == pytest.approx(1.0)
    assert rows[1]["before_ft"]["map50_95"] == pytest.approx(0.5) and "map_kept" not in rows[2]
    for r in rows[:2]:
        r["t1"] = {"min_ms": r["ms"], "median_ms": r["ms"], "speedup": 100.0 / r["ms"], "speedup_median": 100.0 / r["ms"]}
    meta = {"command": "c", "machine": {}, "start_epochs": 2, "more_epochs": 0, "epochs": 1, "seed": 0, "n_train": 4,
            "n_val": 2, "warmup": 0, "repeats": 1}
    table = bench.markdown(meta, [{"label": "m", "rows": rows}], [1]).splitlines()
    assert "| m | width | 40% | 40.0% | 0 | 0.500 | 0.400 | 80.0% | 80 / 80, 1.25x (1.25x) |" in table
    assert any("| m | depth | 40% | cannot remove 40.0%" in line for line in table)

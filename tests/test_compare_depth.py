"""compare rows for width, depth and both (`compare_depth`): each is its own cached row beside the width row of the
same criterion and target, blocks-alone rows that cannot reach a target say so, and compare.md's first table is the
measured speed-up.  The per-row work is faked (compare_fakes); the sweep's loop, cache and resume run for real."""

from __future__ import annotations

import json

import pytest

import compare_fakes
from pruning.errors import PlanError
from pruning.job import compare as cmp
from pruning.job.config import ConfigError, load_config

SPEEDUP = {"never": 1.5, "auto": 1.7, "only": 1.1}


@pytest.fixture
def fake_work(monkeypatch):
    """compare_fakes plus: plan_for_target records its depth and criterion and refuses blocks alone at 50%;
    measure adds a speed-up per pruning mode (read from the tag)."""
    calls, state = compare_fakes.install(monkeypatch.setattr)
    planned: list[tuple[str, float, object]] = []
    fake_plan, fake_measure = cmp.plan_for_target, cmp.measure

    def plan_for_target(graph, target, **kw):
        planned.append((kw["depth"], target, kw["criterion"]))
        if kw["depth"] == "only" and target > 0.4:
            raise PlanError(f"cannot remove {target:.1%}: at most 7.0% with depth='only' in scope 'all'")
        return fake_plan(graph, target, **kw)

    def measure(weights, settings, data, out, step, criterion, reference=None):
        row = fake_measure(weights, settings, data, out, step, criterion, reference)
        mode = "auto" if "-both-" in str(step) else "only" if "-depth-" in str(step) else "never"
        return {**row, "speedup": SPEEDUP[mode] if reference else 1.0, "speedup_median": SPEEDUP[mode] - 0.1
                if reference else 1.0}

    monkeypatch.setattr(cmp, "plan_for_target", plan_for_target)
    monkeypatch.setattr(cmp, "measure", measure)
    return calls, state, planned


def _settings(tmp_path, name, **kw):
    return load_config(overrides={"project": str(tmp_path), "name": name, "compare_criteria": ["detdshap", "l1"],
                                  "compare_targets": [0.3, 0.5], "compare_epochs": 1, "compare_seeds": [0],
                                  "compare_depth": ["never", "auto", "only"], **kw})


def test_width_both_and_depth_rows_are_swept_cached_and_resumed(tmp_path, fake_work):
    calls, state, planned = fake_work
    per_criterion = ["{c}-0.3", "{c}-0.5", "{c}-both-0.3", "{c}-both-0.5", "{c}-depth-0.3"]  # depth-0.5: unreachable
    expected = ["s0-0", "s0-ft"] + [f"s0-{t.format(c=c)}" for c in ("detdshap", "l1") for t in per_criterion]
    whole = cmp.compare(_settings(tmp_path, "whole"))
    assert calls == expected
    assert [d for d, _, _ in planned] == ["never", "never", "auto", "auto", "only", "only"] * 2
    # width rows reuse the scored Precomputed (the fakes' stands in as the name); depth rows get the criterion itself,
    # whose own pass scores the blocks too
    assert [isinstance(c, str) for d, _, c in planned] == [d == "never" for d, _, _ in planned]
    unreachable = json.loads((whole / cmp.ROWS / "s0-detdshap-depth-0.5.json").read_text())
    assert unreachable["prune"] == "depth" and "at most 7.0%" in unreachable["unreachable"]
    rows = json.loads((whole / "compare.json").read_text())["rows"]
    assert [r.get("prune") for r in rows if r["criterion"] == "l1"] == ["width"] * 2 + ["both"] * 2 + ["depth"] * 2

    calls.clear()
    state["fail_at"] = "s0-l1-both-0.3"
    with pytest.raises(compare_fakes.Interrupted):
        cmp.compare(_settings(tmp_path, "cut"))
    calls.clear()
    state["fail_at"] = None
    cmp.compare(_settings(tmp_path, "cut", resume=True))
    assert calls == ["s0-l1-both-0.3", "s0-l1-both-0.5", "s0-l1-depth-0.3"]  # the rest came from rows/
    assert (tmp_path / "cut" / "compare.md").read_text() == (whole / "compare.md").read_text()


def test_compare_md_shows_width_both_and_depth_side_by_side_speed_up_first(tmp_path, fake_work):
    out = cmp.compare(_settings(tmp_path, "md"))
    md = (out / "compare.md").read_text()
    first = md.split("\n\n")[3]  # after the title, the conditions and the sentence introducing it
    assert first.splitlines()[:2] == ["| criterion | 30% removed | 50% removed |", "|---|---|---|"]
    assert "| detdshap (width) | 1.50× (1.40×) | 1.50× (1.40×) |" in first
    assert "| detdshap (both) | 1.70× (1.60×) | 1.70× (1.60×) |" in first
    assert "| detdshap (depth) | 1.10× (1.00×) | - |" in first
    assert "seed 0, detdshap at 50%: cannot remove 50.0%: at most 7.0% with depth='only'" in md
    paired = md.split("Paired difference to DetDSHAP")[1]
    assert "| l1 (both) |" in paired and "| detdshap" not in paired


def test_paired_differences_compare_the_same_pruning_mode(tmp_path):
    def row(criterion, prune, m):
        return {"seed": 0, "criterion": criterion, "target": 0.4 if prune else 0.0, "gflops": 1.0, "map50_95": m,
                "speedup": 1.0, **({"prune": prune} if prune else {})}

    rows = [row("unpruned", None, 0.5), row("detdshap", "width", 0.45), row("detdshap", "both", 0.40),
            row("l1", "width", 0.42), row("l1", "both", 0.41)]
    cmp.write_compare(tmp_path, rows, {"model": "m.yaml", "compare_scope": "all", "compare_metric": "gflops",
                                       "compare_epochs": 0})
    paired = (tmp_path / "compare.md").read_text().split("Paired difference to DetDSHAP")[1]
    assert "| l1 (width) | -3.0 |" in paired and "| l1 (both) | +1.0 |" in paired
    cmp.write_compare(tmp_path, rows[:3], {"model": "m.yaml", "compare_scope": "all", "compare_metric": "gflops",
                                           "compare_epochs": 0})
    assert "Paired difference" not in (tmp_path / "compare.md").read_text()  # DetDSHAP alone: nothing to pair


@pytest.mark.parametrize("modes", ["[]", "[never, never]", "[width]", "auto"])
def test_bad_compare_depth_is_refused(modes):
    with pytest.raises(ConfigError, match=r"compare_depth=.* must be a non-empty list of distinct values among "
                                          r"never, auto, only"):
        load_config(None, [f"compare_depth={modes}"])


def test_a_real_sweep_prunes_both_rows_to_the_target_with_blocks_and_records_blocks_alone_short_of_it(tmp_path):
    """No fakes: yolov8n-seg trained one epoch on a tiny shapes set, l1 at 30% of GFLOPs, both and depth rows."""
    from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", ShapesConfig(n_train=8, n_val=4, imgsz=64, seed=1))
    settings = load_config(overrides=dict(
        model="yolov8n-seg.yaml", data=str(data), imgsz=64, batch=4, pretrain_epochs=1, calib_images=4,
        project=str(tmp_path / "runs"), name="exp", latency_imgsz=64, latency_repeats=2, compare_epochs=0,
        compare_criteria=["l1"], compare_targets=[0.3], compare_seeds=[0], compare_depth=["auto", "only"]))
    out = cmp.compare(settings)
    rows = json.loads((out / "compare.json").read_text())["rows"]
    both, depth = rows[1], rows[2]
    assert (both["prune"], depth["prune"]) == ("both", "depth")
    assert 0.3 <= 1 - both["gflops"] / rows[0]["gflops"] < 0.33 and both["blocks_removed"] >= 1
    assert both["speedup"] > 0 and both["speedup_median"] > 0
    assert "cannot remove 30.0%" in depth["unreachable"]  # yolov8n-seg's two removable blocks hold ~3% of GFLOPs
    assert "| l1 (both) |" in (out / "compare.md").read_text().split("\n\n")[3]

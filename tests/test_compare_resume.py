"""compare: every finished row is cached in the run directory, and a sweep interrupted then resumed with
resume=true equals the sweep run in one go, the finished rows read from the cache and not computed again.

The expensive per-row work (training, scoring, pruning, validating) is replaced by deterministic fakes; the sweep's
own loop, cache and resume code run for real."""

from __future__ import annotations

import json

import pytest

import compare_fakes
from pruning.errors import PruningError
from pruning.job import compare as cmp
from pruning.job.config import load_config


@pytest.fixture
def fake_work(monkeypatch):
    """Fake per-row work; `calls` records what was computed, `fail_at` interrupts the sweep at that row's tag."""
    return compare_fakes.install(monkeypatch.setattr)


def _settings(tmp_path, name, **kw):
    return load_config(overrides={"project": str(tmp_path), "name": name, "compare_criteria": ["l1", "random"],
                                  "compare_targets": [0.3, 0.5], "compare_epochs": 1, "compare_seeds": [0, 1], **kw})


def test_an_interrupted_then_resumed_sweep_equals_the_sweep_in_one_go(tmp_path, fake_work):
    calls, state = fake_work
    whole = cmp.compare(_settings(tmp_path, "whole"))
    one_go = json.loads((whole / "compare.json").read_text())["rows"]
    per_seed = ["0", "ft", "l1-0.3", "l1-0.5", "random-0.3", "random-0.5"]
    assert calls == [f"s{seed}-{t}" for seed in (0, 1) for t in per_seed]

    calls.clear()
    state["fail_at"] = "s1-random-0.3"
    with pytest.raises(compare_fakes.Interrupted):
        cmp.compare(_settings(tmp_path, "cut"))
    assert sorted(p.stem for p in (tmp_path / "cut" / cmp.ROWS).glob("*.json")) == sorted(
        [f"s0-{t}" for t in ("unpruned", "unpruned-ft", "l1-0.3", "l1-0.5", "random-0.3", "random-0.5")]
        + [f"s1-{t}" for t in ("unpruned", "unpruned-ft", "l1-0.3", "l1-0.5")])

    calls.clear()
    state["fail_at"] = None
    resumed = cmp.compare(_settings(tmp_path, "cut", resume=True))
    assert resumed == tmp_path / "cut"
    assert calls == ["s1-random-0.3", "s1-random-0.5"]  # the finished rows came from the cache
    rows = json.loads((resumed / "compare.json").read_text())["rows"]
    assert [{k: v for k, v in r.items() if k != "weights"} for r in rows] == [
        {k: v for k, v in r.items() if k != "weights"} for r in one_go]
    assert (resumed / "compare.md").read_text() == (whole / "compare.md").read_text()
    assert [r["seed"] for r in rows] == [0] * 6 + [1] * 6


def test_resume_without_a_cached_sweep_is_refused(tmp_path, fake_work):
    with pytest.raises(PruningError, match="has no rows/ of a compare sweep to continue"):
        cmp.compare(_settings(tmp_path, "never", resume=True))


def test_a_sweep_held_by_another_process_is_refused(tmp_path, fake_work):
    from pruning.job.runlock import RunLock, RunLockedError

    calls, _ = fake_work
    (tmp_path / "busy" / cmp.ROWS).mkdir(parents=True)
    with RunLock(tmp_path / "busy"):
        with pytest.raises(RunLockedError, match="busy is in use by pid"):
            cmp.compare(_settings(tmp_path, "busy", resume=True))
    assert calls == [] and sorted(p.name for p in (tmp_path / "busy").iterdir()) == [cmp.ROWS, "run.lock"]


def test_a_resumed_sweep_keeps_its_settings_but_may_add_seeds(tmp_path, fake_work):
    from pruning.job.resume import ResumeError

    calls, state = fake_work
    state["fail_at"] = "s0-l1-0.5"
    with pytest.raises(compare_fakes.Interrupted):
        cmp.compare(_settings(tmp_path, "cut"))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut").rglob("*")}
    state["fail_at"] = None
    with pytest.raises(ResumeError, match=r"was started with imgsz=128, compare_epochs=1; this call gives "
                                          r"imgsz=64, compare_epochs=3"):
        cmp.compare(_settings(tmp_path, "cut", resume=True, compare_epochs=3, imgsz=64))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut").rglob("*")} == before
    calls.clear()
    cmp.compare(_settings(tmp_path, "cut", resume=True, compare_seeds=[0, 1, 2], workers=1))
    assert calls[0] == "s0-l1-0.5" and calls[-1] == "s2-random-0.5"


def test_compare_md_gives_mean_std_over_seeds_and_the_paired_difference_to_detdshap(tmp_path):
    def row(seed, criterion, target, m):
        return {"seed": seed, "criterion": criterion, "target": target, "gflops": 2.0 - 2 * target, "map50_95": m}

    rows = [row(0, "unpruned", 0.0, 0.5), row(0, "detdshap", 0.4, 0.45), row(0, "random", 0.4, 0.40),
            row(1, "unpruned", 0.0, 0.6), row(1, "detdshap", 0.4, 0.50), row(1, "random", 0.4, 0.47)]
    cmp.write_compare(tmp_path, rows, {"model": "m.yaml", "compare_scope": "all", "compare_metric": "gflops",
                                       "compare_epochs": 3})
    md = (tmp_path / "compare.md").read_text()
    kept, paired = md.split("mAP50-95 kept")[1].split("Paired difference to DetDSHAP")
    assert "unpruned model's 0.550 ± 0.071" in kept
    assert "| detdshap | 86.7% ± 4.7% |" in kept  # 0.45/0.5 and 0.50/0.6
    assert "| random | 79.2% ± 1.2% |" in kept  # 0.40/0.5 and 0.47/0.6
    assert "| random | -4.0 ± 1.4 |" in paired and "| detdshap |" not in paired  # -5 and -3 points


@pytest.mark.parametrize("seeds", ["[]", "[0,0]", "[-1]", "[0.5]", "3"])
def test_bad_compare_seeds_are_refused(seeds):
    from pruning.job.config import ConfigError

    with pytest.raises(ConfigError, match=r"compare_seeds=.* must be a non-empty list of distinct integers >= 0"):
        load_config(None, [f"compare_seeds={seeds}"])

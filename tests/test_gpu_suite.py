"""benchmarks/gpu_suite.py runs at tiny sizes on the CPU (so it cannot rot), writes its JSON and table naming the device,
and each of its checks fails on a wrong result (exit status 1)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_suite  # noqa: E402


def test_suite_runs_tiny_on_cpu(tmp_path):
    assert gpu_suite.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["device_name"].startswith("CPU") and not any(report["failures"].values())
    assert set(report["sections"]) == {"tests", "speed", "scoring", "agreement", "prune", "profile"}
    prune = report["sections"]["prune"]["rows"]
    assert [r["mode"] for r in prune] == ["unpruned", "width", "both"] and prune[2]["blocks_removed"] > 0
    assert {r["runtime"] for r in prune} == {"eager"}  # CUDA-graph replay is timed on CUDA only
    configs = report["sections"]["scoring"]["configs"]
    assert [(c["batch"], c["chunk"]) for c in configs] == [(8, 1), (2, 2)]
    assert all(c["boxes_explained"] == configs[0]["boxes_explained"] > 0 for c in configs)
    (prof,) = report["sections"]["profile"]["rows"]
    assert prof["from_array_s"] > 0 and prof["kernel_launches"] == 0 and prof["top_host_ops"]
    row = report["sections"]["speed"]["rows"][0]
    assert row["mode"] == "eager" and row["explain_one_s"] > 0
    assert report["sections"]["agreement"]["boxes"]
    table = (tmp_path / "gpu_suite.md").read_text()
    assert table.startswith("# GPU suite on CPU") and "| agreement | pass |" in table


GOOD_ROW = {"model": "m", "imgsz": 64, "mode": "compiled", "forward_s": 0.1, "forward_grad_s": 0.2,
            "explain_one_s": 0.3, "compile_failed": None}
GOOD_PRUNE = {"model": "m", "mode": "width", "target": 0.3, "min_ms": 2.0, "median_ms": 2.1, "speedup": 1.2}
GOOD_PROFILE = {"mode": "eager", "decode_s": 0.004, "from_path_s": 0.03, "from_array_s": 0.025,
                "profiled_wall_s": 0.03}
GOOD_BOX = {"index": 0, "relevance_rel_diff": 1e-12, "score_rel_diff": 1e-13, "max_abs_delta": 1e-12, "abs_score": 0.8}


@pytest.mark.parametrize("check, good, bad, says", [
    ("tests", {"returncode": 0}, {"returncode": 1}, "cuda tests failed"),
    ("speed", {"rows": [GOOD_ROW], "skipped": []}, {"rows": [{**GOOD_ROW, "explain_one_s": math.nan}], "skipped": []},
     "explain_one_s = nan"),
    ("speed", {"rows": [GOOD_ROW], "skipped": []},
     {"rows": [{**GOOD_ROW, "compile_failed": "BackendCompilerFailed"}], "skipped": []}, "fell back to eager"),
    ("speed", {"rows": [GOOD_ROW], "skipped": []}, {"rows": [], "skipped": []}, "no explain_speed row"),
    ("scoring", {"boxes_explained": 4, "ratio_best": 0.4, "ratio_median": 0.3},
     {"boxes_explained": 4, "ratio_best": math.inf, "ratio_median": 0.3}, "ratio_best = inf"),
    ("scoring", {"boxes_explained": 4, "ratio_best": 0.4, "ratio_median": 0.3},
     {"boxes_explained": 0, "ratio_best": 0.4, "ratio_median": 0.3}, "explained no box"),
    ("agreement", {"boxes": [GOOD_BOX]}, {"boxes": [{**GOOD_BOX, "relevance_rel_diff": 1e-6}]}, "relevance differs"),
    ("agreement", {"boxes": [GOOD_BOX]}, {"boxes": [{**GOOD_BOX, "score_rel_diff": math.nan}]}, "score differs"),
    ("agreement", {"boxes": [GOOD_BOX]}, {"boxes": [{**GOOD_BOX, "max_abs_delta": 1e-3}]}, "completeness delta"),
    ("agreement", {"boxes": [GOOD_BOX]}, {"boxes": []}, "no box explained"),
    ("speed", {"rows": [GOOD_ROW], "skipped": []},
     {"rows": [{"model": "m", "imgsz": 64, "mode": "graph", "error": "RuntimeError: boom"}], "skipped": []}, "boom"),
    ("prune", {"rows": [GOOD_PRUNE]}, {"rows": [{**GOOD_PRUNE, "speedup": math.nan}]}, "speedup = nan"),
    ("prune", {"rows": [GOOD_PRUNE]}, {"rows": [{**GOOD_PRUNE, "mode": "unpruned"}]}, "no pruned model"),
    ("profile", {"rows": [GOOD_PROFILE]}, {"rows": [{**GOOD_PROFILE, "from_array_s": 0.0}]}, "from_array_s = 0.0"),
    ("profile", {"rows": [GOOD_PROFILE]}, {"rows": []}, "profile: no row"),
])
def test_each_check_fails_on_a_wrong_result(check, good, bad, says):
    assert gpu_suite.CHECKS[check](good) == []
    failures = gpu_suite.CHECKS[check](bad)
    assert failures and says in "; ".join(failures)


def test_a_failed_check_exits_nonzero_and_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite, "run_agreement", lambda device, cfg: {"boxes": [{**GOOD_BOX, "max_abs_delta": 1.0}]})
    assert gpu_suite.main(["--device", "cpu", "--tiny", "--only", "agreement", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["failures"]["agreement"]
    assert "| agreement | FAIL |" in (tmp_path / "gpu_suite.md").read_text()


def test_a_crashed_section_is_a_failed_check(tmp_path, monkeypatch):
    def crash(device, cfg):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu_suite, "run_scoring", crash)
    assert gpu_suite.main(["--device", "cpu", "--tiny", "--only", "scoring", "--out", str(tmp_path)]) == 1
    assert "out of memory" in json.loads((tmp_path / "gpu_suite.json").read_text())["failures"]["scoring"][0]


def test_sections_past_the_deadline_are_not_started_and_fail(tmp_path):
    assert gpu_suite.main(["--device", "cpu", "--tiny", "--deadline", "0", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert report["not_started"] == list(gpu_suite.ORDER) and report["sections"] == {}
    assert all("deadline" in report["failures"][name][0] for name in gpu_suite.ORDER)


def test_speed_rows_time_the_modes_without_a_compiler_first():
    cfg = {**gpu_suite.FULL, "models": ["a", "b"], "imgsz": [640, 1280]}
    rows = gpu_suite.speed_rows(cfg)
    modes = [m for _, _, m in rows]
    assert len(rows) == 2 * 2 * len(cfg["modes"]) and set(modes[:8]) == {"eager", "graph"}
    assert set(modes[8:]) == {"compiled", "cudagraph"}

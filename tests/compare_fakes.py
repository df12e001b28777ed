"""Deterministic fakes for the per-row work of `pruning.job.compare` (training, scoring, pruning, validating), so
that the sweep's own loop, sharding, cache and resume run for real in a second.  Used by the compare tests, in
process (through monkeypatch) and in torchrun's processes (through `install(setattr)`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable


class Interrupted(Exception):
    pass


def install(setattr_: Callable[[Any, str, Any], None]) -> tuple[list[str], dict[str, Any]]:
    """Replace compare's per-row work with fakes via `setattr_` (monkeypatch.setattr, or setattr in a subprocess);
    returns `calls` (the measured tags, in order) and `state` (`fail_at`: the tag whose measure raises)."""
    from pruning.job import compare as cmp

    calls: list[str] = []
    state: dict[str, Any] = {"fail_at": None}

    def measure(weights, settings, data, out, step, criterion, reference=None):
        tag = f"s{settings.seed}-{step}"
        if tag == state["fail_at"]:
            raise Interrupted(tag)
        calls.append(tag)
        h = sum(map(ord, tag))
        return {"step": step, "criterion": criterion, "weights": weights.name, "params": 1000 + h,
                "gflops": 1.0 + h / 1000, "latency_ms": 1.0, "map50": (h % 97) / 100, "map50_95": (h % 89) / 100,
                "recall": 0.5, "precision": 0.5}

    def weights_file(path):
        path.write_text("w")
        return path

    plan = SimpleNamespace(settings={"ratio": 0.25})
    setattr_(cmp, "_check_reachable", lambda s: None)
    setattr_(cmp, "check_inputs", lambda s: None)
    setattr_(cmp, "dataset", lambda s: s.project)
    setattr_(cmp, "initial_weights", lambda s, d, out, wd: weights_file(wd / "step0.pt"))
    setattr_(cmp, "measure", measure)
    setattr_(cmp, "finetune_to", lambda w, s, d, out, name, e, target: weights_file(target))
    setattr_(cmp, "traced", lambda w, imgsz, device="cpu": "graph")
    setattr_(cmp, "lazy_calibration", lambda s, d, w: None)
    setattr_(cmp, "analyze", lambda g: None)
    setattr_(cmp, "build_criterion", lambda name, s, c: lambda g, cp: {})
    setattr_(cmp, "Precomputed", lambda scores, name: name)
    setattr_(cmp, "plan_for_target", lambda *a, **k: (plan, "report"))
    setattr_(cmp, "prune", lambda g, p: SimpleNamespace(save=lambda path, **k: weights_file(path)))
    return calls, state

"""The relevance-guided pruning pipeline (the paper's Algorithm 2 around ultralytics training):

load (or train) → validate → repeat { score filters, prune `step_ratio` of the remaining, fine-tune, validate }
until `target` of params/GFLOPs is removed or mAP50-95 drops more than `max_map_drop` → final fine-tune → ONNX.

Everything goes into a run directory: every step's checkpoint, `state.json` (what `resume` continues from),
`report.json`, `report.md`, `trend.png`.  The input weights are only ever read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from ..api import analyze, plan, prune
from ..criteria import Calibration
from .report import write_report
from .workspace import (build_criterion, dataset, export_onnx, finetune_to, initial_weights, lazy_calibration, log,
                        measure, run_dir, save_state, traced)


def run(settings: dict[str, Any]) -> Path:
    """Run the whole pipeline with validated `settings` (see pruning.config); returns the run directory."""
    torch.manual_seed(settings["seed"])
    out = run_dir(settings)
    weights_dir = out / "weights"
    weights_dir.mkdir(exist_ok=True)
    data = dataset(settings)
    state: dict[str, Any] = json.loads((out / "state.json").read_text()) if settings["resume"] else {}
    if not state:
        state = {"settings": settings, "rows": [], "step": 0, "done": False, "stop": None}
        state["weights"] = str(initial_weights(settings, data, out, weights_dir))
        state["rows"].append(measure(Path(state["weights"]), settings, data, out, 0, "-"))
        save_state(out, state)
        write_report(out, state["rows"], settings)
    elif state.get("done"):
        return out
    base = state["rows"][0]
    metric = settings["target_metric"]
    calibration = lazy_calibration(settings, data, state["weights"])
    while state["stop"] is None:
        last = state["rows"][-1]
        removed = 1 - last[metric] / base[metric]
        k = state["step"] + 1
        weights = None
        if removed >= settings["target"]:
            state["stop"] = f"target reached: {removed:.1%} of {metric} removed"
        elif base["map50_95"] - last["map50_95"] > settings["max_map_drop"]:
            state["stop"] = f"mAP50-95 fell {base['map50_95'] - last['map50_95']:.3f} below the start"
        elif state["step"] >= settings["max_steps"]:
            state["stop"] = f"max_steps={settings['max_steps']} reached"
        else:
            weights = _prune_step(k, Path(state["weights"]), settings, data, out, weights_dir, calibration)
            if weights is None:
                state["stop"] = (f"no filter in scope scores <= prune_threshold={settings['prune_threshold']}"
                                 if settings["prune_threshold"] is not None else "nothing left to prune in scope")
        if weights is None:
            log(f"pruning stops: {state['stop']}")
            save_state(out, state)
            break
        state["rows"].append(measure(weights, settings, data, out, k, settings["criterion"]))
        state["step"], state["weights"] = k, str(weights)
        save_state(out, state)
        write_report(out, state["rows"], settings)

    final = Path(state["weights"])
    if settings["final_epochs"] > 0 and state["step"] > 0:
        final = finetune_to(final, settings, data, out, "final", settings["final_epochs"], weights_dir / "final.pt")
        state["rows"].append(measure(final, settings, data, out, "final", settings["criterion"]))
    state["final"] = str(final)
    if settings["export"] == "onnx":
        state["onnx"] = export_onnx(final, settings, weights_dir)
    state["done"] = True
    save_state(out, state)
    write_report(out, state["rows"], settings)
    return out


def _prune_step(k: int, weights: Path, settings: dict[str, Any], data: Path, out: Path, weights_dir: Path,
                calibration: Callable[[], Calibration]) -> Path | None:
    """Score, prune and fine-tune step k; returns its checkpoint, or None when the plan removes nothing."""
    graph = traced(weights, settings["imgsz"])
    coupling = analyze(graph)
    criterion = build_criterion(settings["criterion"], settings, calibration)
    threshold = settings["prune_threshold"]
    step_plan = plan(graph, ratio=None if threshold is not None else settings["step_ratio"], threshold=threshold,
                     scope=settings["scope"], criterion=criterion, min_channels=settings["min_channels"],
                     round_to=settings["round_to"], coupling=coupling)
    if step_plan.num_removed == 0:
        return None
    pruned = prune(graph, step_plan)
    log(f"step {k} ({settings['criterion']}): {pruned.report}")
    pruned_path = pruned.save(weights_dir / f"step{k}-pruned.pt", overwrite=True, half=False)
    if settings["epochs_per_step"] == 0:
        return pruned_path
    return finetune_to(pruned_path, settings, data, out, f"step{k}", settings["epochs_per_step"],
                     weights_dir / f"step{k}.pt")



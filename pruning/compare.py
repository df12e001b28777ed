"""`python -m pruning compare`: several criteria on the same model, data and fine-tuning budget.

For each criterion and each ratio of `compare_ratios`, the trained starting model is pruned in one shot,
fine-tuned `epochs_per_step` epochs and validated; the table and a plot (mAP50-95 against GFLOPs removed, one
curve per criterion) go to the run directory as compare.json, compare.md and compare.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fxgraph

from .api import analyze, prune
from .api import plan as make_plan
from .pipeline import _finetune, _initial_weights, build_criterion, dataset, lazy_calibration, measure, run_dir
from .report import COLUMNS, markdown_table

COMPARE_COLUMNS = (("criterion", "criterion", "{}"), ("ratio", "ratio", "{:.2f}")) + COLUMNS[2:]


def compare(settings: dict[str, Any]) -> Path:
    """Run the sweep; returns the run directory."""
    out = run_dir({**settings, "resume": False})
    weights_dir = out / "weights"
    weights_dir.mkdir(exist_ok=True)
    data = dataset(settings)
    start = _initial_weights(settings, data, out, weights_dir)
    base = measure(start, settings, data, out, 0, "-")
    rows = [{**base, "criterion": "unpruned", "ratio": 0.0}]
    calibration = lazy_calibration(settings, data, start)
    graph = fxgraph.trace(start, settings["imgsz"])
    coupling = analyze(graph)
    for name in settings["compare_criteria"]:
        criterion = build_criterion(name, settings, calibration)
        scores = criterion(graph, coupling)  # scored once per criterion, reused for every ratio
        for ratio in settings["compare_ratios"]:
            plan = make_plan(graph, ratio=ratio, scope=settings["scope"], criterion=lambda g, c, s=scores: s,
                             min_channels=settings["min_channels"], round_to=settings["round_to"], coupling=coupling)
            tag = f"{name}-{ratio:g}"
            pruned_path = prune(graph, plan).save(weights_dir / f"{tag}-pruned.pt", overwrite=True, half=False)
            weights = pruned_path
            if settings["epochs_per_step"] > 0:
                weights = _finetune(pruned_path, settings, data, out, tag, settings["epochs_per_step"],
                                    weights_dir / f"{tag}.pt")
            rows.append({**measure(weights, settings, data, out, tag, name), "ratio": ratio})
            write_compare(out, rows, settings)
    write_compare(out, rows, settings)
    return out


def write_compare(out: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """compare.json, compare.md and compare.png for the rows so far (row 0: the unpruned model)."""
    (out / "compare.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=str))
    text = [f"# Criteria compared on {settings.get('pretrained') or settings.get('model')}", "",
            f"One-shot pruning at each ratio (scope {settings['scope']}), then {settings['epochs_per_step']} "
            "epochs of fine-tuning; box metrics on the val split.", "", markdown_table(rows, COMPARE_COLUMNS), ""]
    (out / "compare.md").write_text("\n".join(text))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0]
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name in dict.fromkeys(r["criterion"] for r in rows[1:]):
        pts = [(0.0, base["map50_95"])] + sorted(
            (1 - r["gflops"] / base["gflops"], r["map50_95"]) for r in rows[1:] if r["criterion"] == name)
        ax.plot(*zip(*pts), "o-", label=name)
    ax.set_xlabel("fraction of GFLOPs removed")
    ax.set_ylabel("mAP50-95 (box, val)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(out / "compare.png", dpi=110)
    plt.close(fig)

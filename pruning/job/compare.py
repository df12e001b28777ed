"""`python -m pruning compare`: several criteria on the same model, data and fine-tuning budget.

Every criterion prunes the same trained starting model in one shot to each target of `compare_targets` (a fraction
of `compare_metric` removed, so all criteria are compared at equal GFLOPs or params: the channel ratio is found by
bisection, pruning.plan_for_target), is fine-tuned `compare_epochs` epochs and validated.  A control row fine-tunes
the unpruned model for the same epochs, so the gain of extra training alone is visible.  The table and a plot
(mAP50-95 against the fraction removed, one curve per criterion) go to the run directory as compare.json,
compare.md and compare.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import fxgraph

from ..api import analyze, plan_for_target, prune
from ..criteria import Precomputed
from ..criteria.progress import progress
from ..errors import PruningError
from .config import Settings
from .report import COLUMNS, markdown_table
from .workspace import (build_criterion, dataset, finetune_to, initial_weights, lazy_calibration, log, measure, run_dir,
                        traced)

COMPARE_COLUMNS = (("criterion", "criterion", "{}"), ("target", "target", "{:.2f}"),
                   ("channel_ratio", "channels removed", "{:.3f}")) + COLUMNS[2:]


def compare(settings: Settings) -> Path:
    """Run the sweep; returns the run directory.  Every finished row is cached in `rows/`; with `resume=true` the
    sweep continues in the existing `project/name`, reading the finished rows instead of computing them again."""
    _check_reachable(settings)
    out = _compare_dir(settings)
    weights_dir = out / "weights"
    weights_dir.mkdir(exist_ok=True)
    data = dataset(settings)
    epochs = settings.compare_epochs
    step0 = weights_dir / "step0.pt"
    start = step0 if settings.resume and step0.is_file() else initial_weights(settings, data, out, weights_dir)
    rows = [cached_row(out, "unpruned", lambda: {**measure(start, settings, data, out, 0, "-"),
                                                 "criterion": "unpruned", "target": 0.0, "channel_ratio": 0.0})]
    graph = traced(start, settings.imgsz)  # the trace measure() just made
    if epochs > 0:  # control: the same fine-tuning budget without pruning
        def control() -> dict[str, Any]:
            weights = finetune_to(start, settings, data, out, "unpruned-ft", epochs, weights_dir / "unpruned-ft.pt")
            return {**measure(weights, settings, data, out, "ft", "unpruned+ft"), "target": 0.0, "channel_ratio": 0.0}

        rows.append(cached_row(out, "unpruned-ft", control))
    calibration = lazy_calibration(settings, data, start)
    coupling = analyze(graph)
    jobs = [(name, target) for name in settings.compare_criteria for target in settings.compare_targets]
    scored: dict[str, Precomputed] = {}

    def pruned_row(name: str, target: float, tag: str) -> dict[str, Any]:
        if name not in scored:  # scored once per criterion, reused for every target
            scored[name] = Precomputed(build_criterion(name, settings, calibration)(graph, coupling), name)
        plan, report = plan_for_target(graph, target, metric=settings.compare_metric,
                                       scope=settings.compare_scope, criterion=scored[name],
                                       min_channels=settings.min_channels, round_to=settings.round_to,
                                       coupling=coupling)
        log(f"{tag}: {plan.settings['ratio']:.3f} of the channels in scope; {report}")
        weights = prune(graph, plan).save(weights_dir / f"{tag}-pruned.pt", overwrite=True, half=False)
        if epochs > 0:
            weights = finetune_to(weights, settings, data, out, tag, epochs, weights_dir / f"{tag}.pt")
        return {**measure(weights, settings, data, out, tag, name), "target": target,
                "channel_ratio": plan.settings["ratio"]}

    for name, target in progress(jobs, "compare"):
        tag = f"{name}-{target:g}"
        rows.append(cached_row(out, tag, lambda: pruned_row(name, target, tag)))
        write_compare(out, rows, settings.to_dict())
    write_compare(out, rows, settings.to_dict())
    return out


ROWS = "rows"  # the run directory's cache of finished rows, one json file per row


def _compare_dir(settings: Settings) -> Path:
    """A new numbered run directory, or with `resume` the existing `project/name` that holds cached rows."""
    if settings.resume:
        base = Path(settings.project) / str(settings.name)
        if not (base / ROWS).is_dir():
            raise PruningError(f"resume: {base} has no {ROWS}/ of a compare sweep to continue; "
                               f"run compare without resume=true first")
        return base
    out = run_dir(settings)
    (out / ROWS).mkdir()
    return out


def cached_row(out: Path, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The row `key` from `out/rows/key.json` when a run already finished it, else `work()` written there first
    (atomically: an interrupted row is never read back half-written)."""
    path = out / ROWS / f"{key}.json"
    if path.is_file():
        log(f"{key}: finished in an earlier run, read from {path}")
        return json.loads(path.read_text())
    row = work()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, default=str))
    tmp.replace(path)
    return json.loads(path.read_text())  # the same values a resumed run reads


def _check_reachable(settings: Settings) -> None:
    """Refuse targets the scope cannot reach before any training (the most that can be removed depends on the
    architecture, `compare_scope` and `min_channels` only, not on the weights or the criterion)."""
    graph = fxgraph.trace(settings.pretrained or settings.model, settings.imgsz)
    plan_for_target(graph, max(settings.compare_targets), metric=settings.compare_metric,
                    scope=settings.compare_scope, criterion="random", min_channels=settings.min_channels,
                    round_to=settings.round_to, resolution=1.0)  # the largest plan only


def write_compare(out: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """compare.json, compare.md and compare.png for the rows so far (row 0: the unpruned model)."""
    (out / "compare.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2, default=str))
    metric = settings["compare_metric"]
    base = rows[0]
    text = [f"# Criteria compared on {settings.get('pretrained') or settings.get('model')}", "",
            f"One-shot pruning (scope {settings['compare_scope']}) to each target fraction of {metric} removed, then "
            f"{settings['compare_epochs']} epochs of fine-tuning; box metrics on the val split.", "",
            markdown_table(rows, COMPARE_COLUMNS), "",
            f"mAP50-95 kept, as a fraction of the unpruned model's {base['map50_95']:.3f}:", "",
            _kept_table(rows, base["map50_95"]), ""]
    control = next((r for r in rows if r["criterion"] == "unpruned+ft"), None)
    if control is not None:
        text += [f"... and of the unpruned model fine-tuned for the same {settings['compare_epochs']} epochs "
                 f"({control['map50_95']:.3f}; the fair reference when extra training alone still helps):", "",
                 _kept_table(rows, control["map50_95"]), ""]
    (out / "compare.md").write_text("\n".join(text))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name in dict.fromkeys(r["criterion"] for r in rows[1:] if r["target"] > 0):
        pts = [(0.0, base["map50_95"])] + sorted(
            (1 - r[metric] / base[metric], r["map50_95"]) for r in rows[1:] if r["criterion"] == name)
        ax.plot(*zip(*pts), "o-", label=name)
    for r in rows[1:]:
        if r["criterion"] == "unpruned+ft":
            ax.axhline(r["map50_95"], color="grey", ls=":", label="unpruned + same fine-tuning")
    ax.axhline(0.97 * base["map50_95"], color="grey", ls="--", lw=0.8, label="97% of unpruned")
    ax.set_xlabel(f"fraction of {'GFLOPs' if metric == 'gflops' else 'parameters'} removed")
    ax.set_ylabel("mAP50-95 (box, val)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "compare.png", dpi=110)
    plt.close(fig)


def _kept_table(rows: list[dict[str, Any]], reference: float) -> str:
    """criterion × target: mAP50-95 as a fraction of `reference`."""
    pruned = [r for r in rows if r["target"] > 0]
    targets = sorted({r["target"] for r in pruned})
    head = "| criterion | " + " | ".join(f"{t:.0%} removed" for t in targets) + " |"
    lines = [head, "|" + "---|" * (len(targets) + 1)]
    for name in dict.fromkeys(r["criterion"] for r in pruned):
        kept = {r["target"]: r["map50_95"] / reference if reference else float("nan")
                for r in pruned if r["criterion"] == name}
        lines.append(f"| {name} | " + " | ".join(f"{kept[t]:.1%}" if t in kept else "-" for t in targets) + " |")
    return "\n".join(lines)

"""`python -m pruning compare`: several criteria on the same model, data and fine-tuning budget.

Every criterion prunes the same trained starting model in one shot to each target of `compare_targets` (a fraction
of `compare_metric` removed, so all criteria are compared at equal GFLOPs or params: the channel ratio is found by
bisection, pruning.plan_for_target), is fine-tuned `compare_epochs` epochs and validated.  A control row fine-tunes
the unpruned model for the same epochs, so the gain of extra training alone is visible.  The whole sweep is repeated
for each seed of `compare_seeds`; compare.md gives mean ± std over seeds per cell and each criterion's paired
difference to DetDSHAP.  Every finished row is cached in `rows/` of the run directory and `resume=true` continues
an interrupted sweep.  The table and a plot (mAP50-95 against the fraction removed, one curve per criterion) go to
the run directory as compare.json, compare.md and compare.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fxgraph.outputs import write_text

from ..api import analyze, plan_for_target, prune
from ..criteria import Precomputed, build_criterion
from ..criteria.progress import progress
from ..errors import OutputError, PruningError
from .config import Settings
from .preflight import check_inputs
from .report import COLUMNS, METRIC_WORDS, latency_note, markdown_table, removed_fraction
from .resume import MAY_CHANGE, check_same_settings
from .runlock import RunLock
from .datasets import dataset, lazy_calibration
from .finetuning import finetune_to, initial_weights
from .metrics import measure
from .rundir import log, run_dir
from .timing import check_reachable, latency_options
from .tracecache import traced

COMPARE_COLUMNS = (("seed", "seed", "{}"), ("criterion", "criterion", "{}"), ("target", "target", "{:.2f}"),
                   ("channel_ratio", "channels removed", "{:.3f}")) + COLUMNS[2:]


def compare(settings: Settings) -> Path:
    """Run the sweep once per seed of `compare_seeds`; returns the run directory.  Every finished row is cached in
    `rows/`; with `resume=true` the sweep continues in the existing `project/name`, reading the finished rows
    instead of computing them again."""
    check_inputs(settings)  # weights, data, project: before the run directory exists
    _check_reachable(settings)
    out = _compare_dir(settings)
    with RunLock(out):  # one process per sweep: two would compute and cache the same rows twice
        weights_dir = out / "weights"
        weights_dir.mkdir(exist_ok=True)
        rows: list[dict[str, Any]] = []
        for seed in settings.compare_seeds:
            _sweep_seed(settings.replace(seed=seed), out, weights_dir, rows)
        write_compare(out, rows, settings.to_dict())
    return out


def _sweep_seed(settings: Settings, out: Path, weights_dir: Path, rows: list[dict[str, Any]]) -> None:
    """One seed's rows (the unpruned model, its fine-tuned control, every criterion at every target) appended to
    `rows`; the seed drives the data of the synthetic set, training, calibration sampling and random scores."""
    seed = settings.seed
    data = dataset(settings)
    epochs = settings.compare_epochs
    step0 = weights_dir / f"s{seed}-step0.pt"
    if not (settings.resume and step0.is_file()):
        initial_weights(settings, data, out, weights_dir).replace(step0)
    start = step0

    def add(key: str, work: Callable[[], dict[str, Any]]) -> None:
        rows.append({**cached_row(out, f"s{seed}-{key}", work), "seed": seed})

    add("unpruned", lambda: {**measure(start, settings, data, out, 0, "-"), "criterion": "unpruned", "target": 0.0,
                             "channel_ratio": 0.0})
    graph = traced(start, settings.imgsz)  # the trace measure() just made
    if epochs > 0:  # control: the same fine-tuning budget without pruning
        def control() -> dict[str, Any]:
            weights = finetune_to(start, settings, data, out, f"s{seed}-unpruned-ft", epochs,
                                  weights_dir / f"s{seed}-unpruned-ft.pt")
            return {**measure(weights, settings, data, out, "ft", "unpruned+ft", reference=start), "target": 0.0,
                    "channel_ratio": 0.0}

        add("unpruned-ft", control)
    calibration = lazy_calibration(settings, data, start)
    coupling = analyze(graph)
    jobs = [(name, target) for name in settings.compare_criteria for target in settings.compare_targets]
    scored: dict[str, Precomputed] = {}

    def pruned_row(name: str, target: float, tag: str) -> dict[str, Any]:
        if name not in scored:  # scored once per criterion, reused for every target
            scored[name] = Precomputed(build_criterion(name, settings, calibration)(graph, coupling), name)
        latency = settings.compare_metric == "latency"  # each bisection step is measured: a coarser resolution
        plan, report = plan_for_target(graph, target, metric=settings.compare_metric,
                                       scope=settings.compare_scope, criterion=scored[name],
                                       min_channels=settings.min_channels, round_to=settings.round_to,
                                       coupling=coupling, latency=latency_options(settings),
                                       resolution=0.01 if latency else 1e-3)
        log(f"seed {seed}, {tag}: {plan.settings['ratio']:.3f} of the channels in scope; {report}")
        weights = prune(graph, plan).save(weights_dir / f"s{seed}-{tag}-pruned.pt", overwrite=True, half=False)
        if epochs > 0:
            weights = finetune_to(weights, settings, data, out, f"s{seed}-{tag}", epochs,
                                  weights_dir / f"s{seed}-{tag}.pt")
        return {**measure(weights, settings, data, out, tag, name, reference=start), "target": target,
                "channel_ratio": plan.settings["ratio"]}

    for name, target in progress(jobs, f"compare, seed {seed}"):
        tag = f"{name}-{target:g}"
        add(tag, lambda: pruned_row(name, target, tag))
        write_compare(out, rows, settings.to_dict())


ROWS = "rows"  # the run directory's cache of finished rows, one json file per row
SETTINGS = "settings.json"  # the sweep's settings as started: a resume must keep them
# a resumed sweep may also add or drop seeds, criteria and targets: each cached row is keyed by all three
SWEEP_MAY_CHANGE = MAY_CHANGE + ("seed", "compare_seeds", "compare_criteria", "compare_targets")


def _compare_dir(settings: Settings) -> Path:
    """A new numbered run directory, or with `resume` the existing `project/name` that holds cached rows (refused
    when its settings differ from the sweep's stored ones in anything but SWEEP_MAY_CHANGE)."""
    if settings.resume:
        base = Path(settings.project) / str(settings.name)
        if not (base / ROWS).is_dir():
            raise PruningError(f"resume: {base} has no {ROWS}/ of a compare sweep to continue; "
                               f"run compare without resume=true first")
        if (base / SETTINGS).is_file():  # sweeps from before this file was written are not checked
            stored = json.loads((base / SETTINGS).read_text())
            for change in check_same_settings(stored, settings, base, SWEEP_MAY_CHANGE):
                log(f"resume with changed {change}")
        return base
    out = run_dir(settings)
    (out / ROWS).mkdir()
    write_text(out / SETTINGS, json.dumps(settings.to_dict(), indent=2, default=str), error=OutputError)
    return out


def cached_row(out: Path, key: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The row `key` from `out/rows/key.json` when a run already finished it, else `work()` written there first
    (atomically: an interrupted row is never read back half-written)."""
    path = out / ROWS / f"{key}.json"
    if path.is_file():
        log(f"{key}: finished in an earlier run, read from {path}")
        return json.loads(path.read_text())
    write_text(path, json.dumps(work(), default=str), error=OutputError)
    return json.loads(path.read_text())  # the same values a resumed run reads


def _check_reachable(settings: Settings) -> None:
    """Refuse targets the scope cannot reach before any training (timing.check_reachable)."""
    check_reachable(settings, max(settings.compare_targets), settings.compare_metric, settings.compare_scope)


def write_compare(out: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """compare.json, compare.md and compare.png for the rows so far (each seed's first row: its unpruned model).
    Cells over several seeds are mean ± sample standard deviation; the paired table subtracts DetDSHAP's mAP50-95
    of the same seed and target before averaging, so the spread of the seeds' starting models cancels."""
    write_text(out / "compare.json", json.dumps({"settings": settings, "rows": rows}, indent=2, default=str),
               error=OutputError)
    metric = settings["compare_metric"]
    unpruned = _per_seed(rows, "unpruned")
    seeds = sorted(unpruned)
    text = [f"# Criteria compared on {settings.get('pretrained') or settings.get('model')}", "",
            f"One-shot pruning (scope {settings['compare_scope']}) to each target fraction of {metric} removed, then "
            f"{settings['compare_epochs']} epochs of fine-tuning; box metrics on the val split; seeds {seeds}.", "",
            latency_note(settings), "",
            markdown_table(rows, COMPARE_COLUMNS), "",
            f"mAP50-95 kept, as a fraction of the unpruned model's {_mean_std(list(unpruned.values()), '{:.3f}')}"
            f"{' (mean ± std over seeds, each seed against its own unpruned model)' if len(seeds) > 1 else ''}:", "",
            _cell_table(rows, lambda r: r["map50_95"] / unpruned[_seed(r)] if unpruned.get(_seed(r)) else None,
                        "{:.1%}"), ""]
    control = _per_seed(rows, "unpruned+ft")
    if control:
        text += [f"... and of the unpruned model fine-tuned for the same {settings['compare_epochs']} epochs "
                 f"({_mean_std(list(control.values()), '{:.3f}')}; the fair reference when extra training alone "
                 f"still helps):", "",
                 _cell_table(rows, lambda r: r["map50_95"] / control[_seed(r)] if control.get(_seed(r)) else None,
                             "{:.1%}"), ""]
    detdshap = {(_seed(r), r["target"]): r["map50_95"] for r in rows if r["criterion"] == "detdshap"
                and r["target"] > 0}
    if detdshap:
        text += ["Paired difference to DetDSHAP (criterion minus DetDSHAP, mAP50-95 points, same seed and target; "
                 "mean ± std over seeds; negative: DetDSHAP is ahead):", "",
                 _cell_table([r for r in rows if r["criterion"] != "detdshap"],
                             lambda r: 100 * (r["map50_95"] - detdshap[_seed(r), r["target"]])
                             if (_seed(r), r["target"]) in detdshap else None, "{:+.1f}"), ""]
    write_text(out / "compare.md", "\n".join(text), error=OutputError)
    _plot(out, rows, metric)


def _seed(row: dict[str, Any]) -> int:
    return row.get("seed", 0)


def _per_seed(rows: list[dict[str, Any]], criterion: str) -> dict[int, float]:
    """seed -> mAP50-95 of the row `criterion` (unpruned, unpruned+ft) of that seed."""
    return {_seed(r): r["map50_95"] for r in rows if r["criterion"] == criterion}


def _mean_std(values: list[float], fmt: str) -> str:
    """`mean ± sample std` (ddof 1) of `values`, or the value alone for one."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(float(np.mean(values)))} ± {fmt.format(float(np.std(values, ddof=1))).lstrip('+')}"


def _cell_table(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None], fmt: str) -> str:
    """criterion × target: `value(row)` over the seeds, mean ± std."""
    pruned = [r for r in rows if r["target"] > 0]
    targets = sorted({r["target"] for r in pruned})
    head = "| criterion | " + " | ".join(f"{t:.0%} removed" for t in targets) + " |"
    lines = [head, "|" + "---|" * (len(targets) + 1)]
    for name in dict.fromkeys(r["criterion"] for r in pruned):
        cells = []
        for t in targets:
            vals = [v for r in pruned if r["criterion"] == name and r["target"] == t
                    for v in [value(r)] if v is not None]
            cells.append(_mean_std(vals, fmt) if vals else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(out: Path, rows: list[dict[str, Any]], metric: str) -> None:
    """compare.png: mAP50-95 against the fraction removed, one curve per criterion (mean over seeds, std bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = {_seed(r): r for r in rows if r["criterion"] == "unpruned"}
    unpruned = float(np.mean([r["map50_95"] for r in base.values()]))
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for name in dict.fromkeys(r["criterion"] for r in rows if r["target"] > 0):
        mine = [r for r in rows if r["criterion"] == name and r["target"] > 0 and _seed(r) in base]
        pts = [(0.0, unpruned, 0.0)]
        for t in sorted({r["target"] for r in mine}):
            at = [r for r in mine if r["target"] == t]
            removed = [removed_fraction(r, base[_seed(r)], metric) for r in at]
            maps = [r["map50_95"] for r in at]
            pts.append((float(np.mean(removed)), float(np.mean(maps)), float(np.std(maps, ddof=1)) if len(maps) > 1
                        else 0.0))
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, fmt="o-", capsize=3, label=name)
    control = [r["map50_95"] for r in rows if r["criterion"] == "unpruned+ft"]
    if control:
        ax.axhline(float(np.mean(control)), color="grey", ls=":", label="unpruned + same fine-tuning")
    ax.axhline(0.97 * unpruned, color="grey", ls="--", lw=0.8, label="97% of unpruned")
    ax.set_xlabel(f"fraction of {METRIC_WORDS.get(metric, metric)} removed")
    ax.set_ylabel("mAP50-95 (box, val)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "compare.png", dpi=110)
    plt.close(fig)

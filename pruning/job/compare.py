"""`python -m pruning compare`: several criteria on the same model, data and fine-tuning budget.

Every criterion prunes the same trained starting model in one shot to each target of `compare_targets` (a fraction
of `compare_metric` removed, so all criteria are compared at equal GFLOPs or params: the channel ratio is found by
bisection, pruning.plan_for_target), is fine-tuned `compare_epochs` epochs and validated.  A control row fine-tunes
the unpruned model for the same epochs, so the gain of extra training alone is visible.  The whole sweep is repeated
for each seed of `compare_seeds`; compare.md gives mean ± std over seeds per cell and each criterion's paired
difference to DetDSHAP.  Every finished row is cached in `rows/` of the run directory and `resume=true` continues
an interrupted sweep.  The table and a plot (mAP50-95 against the fraction removed, one curve per criterion) go to
the run directory as compare.json, compare.md and compare.png once every row is cached.

Under `torchrun --nproc_per_node N -m pruning compare ...` the rows are sharded over the N ranks
(criteria.distributed.shard), each rank computing its rows alone on the GPU of its LOCAL_RANK (or the CPU); rank 0
writes the table once every rank has finished.  A row depends only on its seed, criterion and target, never on
which rank computes it or after which other rows, so the rows equal a single-process sweep's.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from fxgraph.outputs import write_text

from ..api import analyze, plan_for_target, prune
from ..criteria import Precomputed, build_criterion, distributed
from ..criteria.progress import progress
from ..devices import torch_device
from ..errors import OutputError, PlanError, PruningError
from .config import Settings
from .preflight import check_inputs
from .report import COLUMNS, METRIC_KEYS, METRIC_WORDS, latency_note, markdown_table, removed_fraction
from .resume import MAY_CHANGE, check_same_settings
from .runlock import RunLock
from .datasets import dataset, lazy_calibration
from .finetuning import finetune_to, initial_weights
from .metrics import measure, primary, primary_metric
from .rundir import log, run_dir
from .timing import check_reachable, latency_options
from .tracecache import traced

COMPARE_COLUMNS = (("seed", "seed", "{}"), ("criterion", "criterion", "{}"), ("target", "target", "{:.2f}"),
                   ("channel_ratio", "channels removed", "{:.3f}"),
                   ("prune", "prune", lambda r: r.get("prune", "width") if r.get("target") else "-"),
                   ("blocks_removed", "blocks removed", "{}")) + COLUMNS[2:]
# ranks wait at a barrier for the slowest one, whose rows may take hours; a rank that dies is noticed at once (gloo
# sees its connection close, and torchrun stops the others), so the timeout only bounds a rank that hangs
SWEEP_TIMEOUT = datetime.timedelta(days=7)


def compare(settings: Settings) -> Path:
    """Run the sweep once per seed of `compare_seeds`; returns the run directory.  Every finished row is cached in
    `rows/`; with `resume=true` the sweep continues in the existing `project/name`, reading the finished rows
    instead of computing them again.  Under torchrun each rank computes its shard of the rows and rank 0 writes
    compare.json/md/png after all of them finished; a rank that fails leaves the table unwritten."""
    with distributed.group(settings.device, backend="gloo", timeout=SWEEP_TIMEOUT) as (rank, world), \
            ExitStack() as held:
        if world > 1:
            held.enter_context(_train_alone(rank))
        out = distributed.from_rank0(lambda: _open_sweep(settings, held))
        rows = _sweep(_on_my_device(settings, world), out, rank, world)
        if rank == 0:
            write_compare(out, rows, settings.to_dict())
        distributed.barrier()  # every rank returns once the table exists
    return out


def _open_sweep(settings: Settings, held: ExitStack) -> Path:
    """Rank 0's preparation: check the inputs, make (or, resuming, check) the run directory and lock it for the
    sweep (one sweep per directory: two would compute and cache the same rows twice)."""
    check_inputs(settings)  # weights, data, project: before the run directory exists
    _check_reachable(settings)
    out = _compare_dir(settings)
    held.enter_context(RunLock(out))
    return out


@contextmanager
def _train_alone(rank: int) -> Iterator[None]:
    """Within the block each rank trains as a single process.  ultralytics reads torchrun's WORLD_SIZE, RANK and
    LOCAL_RANK once, at import, into module constants, and then acts as one rank of a DDP training (seeds offset by
    the rank, checkpoints saved and validation metrics gathered on rank 0 only, barriers with the other ranks), so
    its modules' constants say one process here (restored after).  Ranks other than 0 keep ultralytics's output to
    errors, as ultralytics's own DDP workers do."""
    import ultralytics.utils as utils

    single = {"WORLD_SIZE": 1, "RANK": -1, "LOCAL_RANK": -1}
    saved = []
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "ultralytics" or name.startswith("ultralytics.")):
            for attr, value in single.items():
                if isinstance(vars(module).get(attr), int):  # the module's own copy of the constant
                    saved.append((module, attr, vars(module)[attr]))
                    setattr(module, attr, value)
    level = utils.LOGGER.level
    if rank != 0:
        utils.LOGGER.setLevel(logging.ERROR)
    try:
        yield
    finally:
        utils.LOGGER.setLevel(level)
        for module, attr, value in saved:
            setattr(module, attr, value)


def _on_my_device(settings: Settings, world: int) -> Settings:
    """Under torchrun: the settings with `device` narrowed to this rank's (the GPU of its LOCAL_RANK, or the CPU),
    so that ultralytics trains on it alone instead of starting a DDP training over all the listed GPUs."""
    if world == 1:
        return settings
    dev = torch_device(settings.device)
    return settings.replace(device="cpu" if dev.type == "cpu" else str(dev.index) if dev.type == "cuda" else
                            dev.type)


PRUNE_NAMES = {"never": "width", "auto": "both", "only": "depth"}  # compare_depth value -> the rows' `prune` name


@dataclass(frozen=True)
class Row:
    """One row of the sweep: `criterion` at `target` with `depth` (pruning.plan_for_target's: never = width,
    auto = both, only = depth), or the controls ("unpruned" and its fine-tuned copy "unpruned-ft", target 0)."""

    seed: int
    criterion: str
    target: float = 0.0
    depth: str = "never"

    @property
    def tag(self) -> str:
        """'unpruned', 'unpruned-ft', '<criterion>-<target>' (width) or '<criterion>-<both|depth>-<target>' (its
        weights and training runs are named after it)."""
        if self.criterion in ("unpruned", "unpruned-ft"):
            return self.criterion
        mode = "" if self.depth == "never" else f"{PRUNE_NAMES[self.depth]}-"
        return f"{self.criterion}-{mode}{self.target:g}"

    @property
    def key(self) -> str:
        """Its file name in `rows/` (without .json): 's<seed>-<tag>'."""
        return f"s{self.seed}-{self.tag}"


def sweep_rows(settings: Settings) -> list[Row]:
    """Every row of the sweep, in the order of the table: per seed the unpruned model, its fine-tuned control
    (when compare_epochs > 0), then each criterion at each target."""
    controls = ["unpruned"] + (["unpruned-ft"] if settings.compare_epochs > 0 else [])
    return [row for seed in settings.compare_seeds
            for row in [Row(seed, c) for c in controls] + [Row(seed, name, target, depth)
                                                          for name in settings.compare_criteria
                                                          for depth in settings.compare_depth
                                                          for target in settings.compare_targets]]


def _sweep(settings: Settings, out: Path, rank: int, world: int) -> list[dict[str, Any]]:
    """This rank's shard of the rows computed (or read from `rows/`); on rank 0, every row of the sweep once all
    ranks finished theirs (others: [])."""
    weights_dir = out / "weights"
    seeds = settings.compare_seeds
    if rank == 0:
        weights_dir.mkdir(exist_ok=True)
        for seed in seeds:  # each seed's data written once, before any rank reads it
            dataset(settings.replace(seed=seed))
    distributed.barrier()
    for seed in distributed.shard(seeds, rank, world):  # the seeds' starting models, in parallel
        start_weights(settings.replace(seed=seed), out)
    distributed.barrier()
    rows = sweep_rows(settings)
    sweep: SeedSweep | None = None
    mine = distributed.shard(rows, rank, world)
    for row in progress(mine, "compare" if world == 1 else f"compare, rank 0's {len(mine)} of {len(rows)} rows"):
        if sweep is None or sweep.seed != row.seed:  # rows come seed after seed: one seed's sweep held at a time
            sweep = SeedSweep(settings.replace(seed=row.seed), out)
        with distributed.alone():  # a row is this rank's alone: its scoring all-reduces nothing
            cached_row(out, row.key, lambda: sweep.compute(row))
    del sweep
    try:
        distributed.barrier()  # every row is cached (a rank that failed raises here, or torchrun stops this one)
    except distributed.RankFailedError as exc:
        raise distributed.RankFailedError(f"compare: {exc}; no compare.md is written. The rows finished so far are "
                                          f"cached in {out / ROWS}: run the same command with resume=true "
                                          f"name={out.name} to compute only the missing ones") from exc
    return [{**read_row(out, row.key), "seed": row.seed} for row in rows] if rank == 0 else []


def start_weights(settings: Settings, out: Path) -> Path:
    """`weights/s<seed>-step0.pt`, the seed's starting model (`pretrained` copied, or trained `pretrain_epochs`),
    made in `out/s<seed>/` so that ranks making several seeds' at once do not share a training directory; with
    resume, the one already there."""
    step0 = out / "weights" / f"s{settings.seed}-step0.pt"
    if not (settings.resume and step0.is_file()):
        scratch = out / f"s{settings.seed}"
        scratch.mkdir(exist_ok=True)
        initial_weights(settings, dataset(settings), scratch, scratch).replace(step0)
    return step0


class SeedSweep:
    """What one seed's rows share, made on first use: its data, its starting model's trace, coupling and
    calibration, and each criterion's scores (scored once, reused for every target)."""

    def __init__(self, settings: Settings, out: Path) -> None:
        self.settings, self.out, self.seed = settings, out, settings.seed
        self.data = dataset(settings)
        self.start = out / "weights" / f"s{self.seed}-step0.pt"
        self.scored: dict[str, Precomputed] = {}
        self.criteria: dict[str, Any] = {}  # criterion name -> the built criterion (depth rows score blocks with it)
        self._graph: Any = None  # the start's trace, coupling and calibration (_prepare)
        self._coupling: Any = None
        self._calibration: Any = None

    def compute(self, row: Row) -> dict[str, Any]:
        """The row's measured fields (the cache adds nothing; the caller adds the seed)."""
        s, start, weights_dir = self.settings, self.start, self.out / "weights"
        if row.criterion == "unpruned":
            measured = measure(start, s, self.data, self.out, 0, "-")
            self._prepare()  # on the CPU, the trace measure() just made (traced keeps the last one)
            return {**measured, "criterion": "unpruned", "target": 0.0, "channel_ratio": 0.0}
        if row.criterion == "unpruned-ft":  # control: the same fine-tuning budget without pruning
            weights = finetune_to(start, s, self.data, self.out, row.key, s.compare_epochs,
                                  weights_dir / f"{row.key}.pt")
            return {**measure(weights, s, self.data, self.out, "ft", "unpruned+ft", reference=start), "target": 0.0,
                    "channel_ratio": 0.0}
        return self._pruned(row)

    def _prepare(self) -> None:
        """The start's trace (scored and pruned on the device, as the pipeline does), coupling and calibration."""
        if self._graph is None:
            self._graph = traced(self.start, self.settings.imgsz, torch_device(self.settings.device))
            self._coupling = analyze(self._graph)
            self._calibration = lazy_calibration(self.settings, self.data, self.start)

    def _pruned(self, row: Row) -> dict[str, Any]:
        s, name, target, tag = self.settings, row.criterion, row.target, row.tag
        self._prepare()
        graph, coupling = self._graph, self._coupling
        if name not in self.criteria:
            self.criteria[name] = build_criterion(name, s, self._calibration)
        if row.depth == "never" and name not in self.scored:
            self.scored[name] = Precomputed(self.criteria[name](graph, coupling), name)
        # blocks are scored from the criterion's own pass (pruning.depth_plan), so depth rows get the criterion
        criterion = self.scored[name] if row.depth == "never" else self.criteria[name]
        latency = s.compare_metric == "latency"  # each bisection step is measured: a coarser resolution
        try:
            plan, report = plan_for_target(graph, target, metric=s.compare_metric, scope=s.compare_scope,
                                           criterion=criterion, min_channels=s.min_channels, round_to=s.round_to,
                                           coupling=coupling, latency=latency_options(s),
                                           resolution=0.01 if latency else 1e-3, depth=row.depth)
        except PlanError as exc:
            if row.depth != "only":  # width (and both) reachability is checked before the sweep starts
                raise
            log(f"seed {self.seed}, {tag}: {exc}")  # blocks alone rarely remove 30% of GFLOPs: the row says so
            return {"criterion": name, "target": target, "prune": PRUNE_NAMES[row.depth], "unreachable": str(exc)}
        blocks = len(getattr(plan, "blocks", ()))
        log(f"seed {self.seed}, {tag}: {plan.settings['ratio']:.3f} of the channels in scope, {blocks} residual "
            f"block(s); {report}")
        weights_dir = self.out / "weights"
        weights = prune(graph, plan).save(weights_dir / f"{row.key}-pruned.pt", overwrite=True, half=False)
        if s.compare_epochs > 0:
            weights = finetune_to(weights, s, self.data, self.out, row.key, s.compare_epochs,
                                  weights_dir / f"{row.key}.pt")
        return {**measure(weights, s, self.data, self.out, tag, name, reference=self.start), "target": target,
                "channel_ratio": plan.settings["ratio"], "prune": PRUNE_NAMES[row.depth], "blocks_removed": blocks}


ROWS = "rows"  # the run directory's cache of finished rows, one json file per row
SETTINGS = "settings.json"  # the sweep's settings as started: a resume must keep them
# a resumed sweep may also add or drop seeds, criteria and targets: each cached row is keyed by all three
SWEEP_MAY_CHANGE = MAY_CHANGE + ("seed", "compare_seeds", "compare_criteria", "compare_targets", "compare_depth")


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


def read_row(out: Path, key: str) -> dict[str, Any]:
    """The finished row `key` from `out/rows/key.json` (PruningError when no rank wrote it)."""
    path = out / ROWS / f"{key}.json"
    if not path.is_file():
        raise PruningError(f"{path} is missing although every rank finished its rows; run the sweep again with "
                           f"resume=true to compute it")
    return json.loads(path.read_text())


def _check_reachable(settings: Settings) -> None:
    """Refuse targets the scope cannot reach with channels before any training (timing.check_reachable); rows of
    blocks alone (compare_depth `only`) that cannot reach a target are recorded as unreachable instead."""
    if set(settings.compare_depth) & {"never", "auto"}:
        check_reachable(settings, max(settings.compare_targets), settings.compare_metric, settings.compare_scope)


def write_compare(out: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """compare.json, compare.md and compare.png for the rows so far (each seed's first row: its unpruned model).
    Cells over several seeds are mean ± sample standard deviation; the paired table subtracts DetDSHAP's mAP50-95
    of the same seed and target before averaging, so the spread of the seeds' starting models cancels."""
    write_text(out / "compare.json", json.dumps({"settings": settings, "rows": rows}, indent=2, default=str),
               error=OutputError)
    unreachable = [r for r in rows if "unreachable" in r]  # blocks alone (compare_depth `only`) short of a target
    rows = [r for r in rows if "unreachable" not in r]
    metric = settings["compare_metric"]
    quality = primary_metric(rows[0].get("task") if rows else None).label  # the task's metric (metrics.primary)
    unpruned = _per_seed(rows, "unpruned")
    seeds = sorted(unpruned)
    text = [f"# Criteria compared on {settings.get('pretrained') or settings.get('model')}", "",
            f"One-shot pruning (scope {settings['compare_scope']}) to each target fraction of {metric} removed, then "
            f"{settings['compare_epochs']} epochs of fine-tuning; {quality} on the val split; seeds {seeds}.", "",
            f"Measured speed-up over the unpruned model, min (median) of the interleaved latency ratios"
            f"{', mean over seeds' if len(seeds) > 1 else ''}:", "",
            _grid(rows, _speedup_cell), "",
            latency_note(settings), "",
            markdown_table(rows, [c for c in COMPARE_COLUMNS  # the task's metrics only
                                  if c[0] not in METRIC_KEYS or any(c[0] in r for r in rows)]),
            "", f"{quality} kept, as a fraction of the unpruned model's {_mean_std(list(unpruned.values()), '{:.3f}')}"
            f"{' (mean ± std over seeds, each seed against its own unpruned model)' if len(seeds) > 1 else ''}:", "",
            _cell_table(rows, lambda r: primary(r) / unpruned[_seed(r)] if unpruned.get(_seed(r)) else None,
                        "{:.1%}"), ""]
    control = _per_seed(rows, "unpruned+ft")
    if control:
        text += [f"... and of the unpruned model fine-tuned for the same {settings['compare_epochs']} epochs "
                 f"({_mean_std(list(control.values()), '{:.3f}')}; the fair reference when extra training alone "
                 f"still helps):", "",
                 _cell_table(rows, lambda r: primary(r) / control[_seed(r)] if control.get(_seed(r)) else None,
                             "{:.1%}"), ""]
    detdshap = {(_seed(r), r["target"], _prune(r)): primary(r) for r in rows if r["criterion"] == "detdshap"
                and r["target"] > 0}
    if detdshap and any(r["criterion"] != "detdshap" and r["target"] > 0 for r in rows):
        text += [f"Paired difference to DetDSHAP (criterion minus DetDSHAP, {quality} points ×100, same seed, target "
                 "and pruning (width, depth or both); mean ± std over seeds; negative: DetDSHAP is ahead):", "",
                 _cell_table([r for r in rows if r["criterion"] != "detdshap"],
                             lambda r: 100 * (primary(r) - detdshap[_seed(r), r["target"], _prune(r)])
                             if (_seed(r), r["target"], _prune(r)) in detdshap else None, "{:+.1f}"), ""]
    if unreachable:
        text += ["Not reached by removing residual blocks alone (each module keeps one block):", ""]
        text += [f"- seed {_seed(r)}, {r['criterion']} at {r['target']:.0%}: {r['unreachable']}" for r in unreachable]
    write_text(out / "compare.md", "\n".join(text), error=OutputError)
    _plot(out, rows, metric)


def _seed(row: dict[str, Any]) -> int:
    return row.get("seed", 0)


def _per_seed(rows: list[dict[str, Any]], criterion: str) -> dict[int, float]:
    """seed -> mAP50-95 of the row `criterion` (unpruned, unpruned+ft) of that seed."""
    return {_seed(r): primary(r) for r in rows if r["criterion"] == criterion}


def _mean_std(values: list[float], fmt: str) -> str:
    """`mean ± sample std` (ddof 1) of `values`, or the value alone for one."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(float(np.mean(values)))} ± {fmt.format(float(np.std(values, ddof=1))).lstrip('+')}"


def _prune(row: dict[str, Any]) -> str:
    """width, depth or both: what the row removed (rows from before depth rows existed: width)."""
    return row.get("prune", "width")


def _labels(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """A row's name in the tables and the plot: its criterion, with `(width|both|depth)` once any row is not width."""
    mixed = any(_prune(r) != "width" for r in rows)
    return lambda r: f"{r['criterion']} ({_prune(r)})" if mixed else r["criterion"]


def _grid(rows: list[dict[str, Any]], cell: Callable[[list[dict[str, Any]]], str]) -> str:
    """criterion (and pruning) × target: `cell(rows of that criterion and target, one per seed)`."""
    pruned = [r for r in rows if r["target"] > 0]
    label = _labels(pruned)
    targets = sorted({r["target"] for r in pruned})
    head = "| criterion | " + " | ".join(f"{t:.0%} removed" for t in targets) + " |"
    lines = [head, "|" + "---|" * (len(targets) + 1)]
    for name in dict.fromkeys(map(label, pruned)):
        cells = [cell([r for r in pruned if label(r) == name and r["target"] == t]) for t in targets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell_table(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None], fmt: str) -> str:
    """criterion × target: `value(row)` over the seeds, mean ± std."""
    def cell(at: list[dict[str, Any]]) -> str:
        vals = [v for r in at for v in [value(r)] if v is not None]
        return _mean_std(vals, fmt) if vals else "-"
    return _grid(rows, cell)


def _speedup_cell(at: list[dict[str, Any]]) -> str:
    """The rows' measured speed-up: mean over seeds of the min ratio (± std over seeds) and, in brackets, of the
    median ratio; '-' where none was timed."""
    mins = [r["speedup"] for r in at if r.get("speedup") is not None]
    if not mins:
        return "-"
    medians = [r["speedup_median"] for r in at if r.get("speedup_median") is not None]
    text = _mean_std(mins, "{:.2f}") + "×"
    return text + (f" ({float(np.mean(medians)):.2f}×)" if medians else "")


def _plot(out: Path, rows: list[dict[str, Any]], metric: str) -> None:
    """compare.png: mAP50-95 against the fraction removed, one curve per criterion (mean over seeds, std bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = {_seed(r): r for r in rows if r["criterion"] == "unpruned"}
    unpruned = float(np.mean([primary(r) for r in base.values()]))
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    label = _labels([r for r in rows if r["target"] > 0])
    for name in dict.fromkeys(label(r) for r in rows if r["target"] > 0):
        mine = [r for r in rows if label(r) == name and r["target"] > 0 and _seed(r) in base]
        pts = [(0.0, unpruned, 0.0)]
        for t in sorted({r["target"] for r in mine}):
            at = [r for r in mine if r["target"] == t]
            removed = [removed_fraction(r, base[_seed(r)], metric) for r in at]
            maps = [primary(r) for r in at]
            pts.append((float(np.mean(removed)), float(np.mean(maps)), float(np.std(maps, ddof=1)) if len(maps) > 1
                        else 0.0))
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, fmt="o-", capsize=3, label=name)
    control = [primary(r) for r in rows if r["criterion"] == "unpruned+ft"]
    if control:
        ax.axhline(float(np.mean(control)), color="grey", ls=":", label="unpruned + same fine-tuning")
    ax.axhline(0.97 * unpruned, color="grey", ls="--", lw=0.8, label="97% of unpruned")
    ax.set_xlabel(f"fraction of {METRIC_WORDS.get(metric, metric)} removed")
    ax.set_ylabel(f"{primary_metric(rows[0].get('task') if rows else None).label}, val")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "compare.png", dpi=110)
    plt.close(fig)

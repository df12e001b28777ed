"""The job's workspace: run directories, datasets, the trace cache, calibration, training, measuring, exporting.

Shared by the pipeline (`pruning.job.pipeline`), the criteria sweep (`compare`) and the CLI, so that each number
and each file is made in one place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import fxgraph
import torch
from fxgraph import stats
from fxgraph.outputs import write_text

from ..criteria import HSIC, Calibration, Criterion, DetDSHAP, RandomCriterion, Taylor, get_criterion, load_calibration
from ..devices import torch_device
from ..errors import OutputError, PruningError
from ..measure import LatencyOptions, measure_latency
from .measure import val_metrics
from .synthetic import ShapesConfig, make_shapes_dataset, shapes_dataset_path
from .trees import TREES, make_trees_dataset, trees_dataset_path
from .train import finetune

if TYPE_CHECKING:
    from .config import Settings

Builder = Callable[["Settings", Callable[[], Calibration]], Criterion]

CRITERION_BUILDERS: dict[str, Builder] = {  # the job's criteria by name: what `criterion=` may say
    "detdshap": lambda s, calib: DetDSHAP(calib(), boxes=s.calib_boxes, iou=s.iou, baseline=s.baseline,
                                          target=s.calib_target, batch=s.calib_batch,
                                          chunk=s.calib_chunk),
    "hsic": lambda s, calib: HSIC(calib(), lam=s.hsic_lambda),
    "l1": lambda s, calib: get_criterion("l1"),
    "l2": lambda s, calib: get_criterion("l2"),
    "taylor": lambda s, calib: Taylor(calib()),
    "random": lambda s, calib: RandomCriterion(seed=s.seed),
}


def build_criterion(name: str, settings: Settings, calibration: Callable[[], Calibration]) -> Criterion:
    """The criterion `name` configured from the settings (the calibration data is read only when needed)."""
    try:
        builder = CRITERION_BUILDERS[name]
    except KeyError:
        raise PruningError(f"unknown criterion {name!r}; use one of {', '.join(CRITERION_BUILDERS)}") from None
    return builder(settings, calibration)


def lazy_calibration(settings: Settings, data: Path, weights: str | Path, rank: int = 0,
                     world: int = 1) -> Callable[[], Calibration]:
    """A function returning the calibration batches (this rank's shard), read from `data` on first call only."""
    cache: list[Calibration] = []

    def calibration() -> Calibration:
        if not cache:
            graph = traced(weights, settings.imgsz)  # the task and stride recorded at trace time (usually cached)
            full = load_calibration(data, graph.task, settings.imgsz, settings.calib_images,
                                    batch=min(settings.batch, settings.calib_images), stride=int(max(graph.stride)))
            cache.append(full.shard(rank, world))
        return cache[0]

    return calibration


def dataset(settings: Settings) -> Path:
    """The data yaml of the run: the user's, `trees` (deepforest's tiled aerial images) or the synthetic shapes,
    both written once under `<project>/../datasets`."""
    root = Path(settings.project).parent / "datasets"
    if settings.data == TREES:
        if not trees_dataset_path(root).is_file():
            log(f"writing the tiled trees dataset from deepforest's images under {root} ...")
        return make_trees_dataset(root)
    if settings.data is not None:
        return Path(settings.data)
    cfg = ShapesConfig(imgsz=settings.imgsz, seed=settings.seed)
    if not shapes_dataset_path(root, cfg).is_file():
        log(f"writing the synthetic dataset ({cfg.n_train} train, {cfg.n_val} val images) under {root} ...")
    return make_shapes_dataset(root, cfg)


def run_dir(settings: Settings) -> Path:
    """`project/name`, or `name2`, `name3`... like ultralytics; with resume, the existing `project/name`."""
    base = Path(settings.project) / str(settings.name)
    if settings.resume:
        if not (base / "state.json").is_file():
            raise PruningError(f"resume: {base} has no state.json to continue from")
        return base
    from ultralytics.utils.files import increment_path

    path = increment_path(base, sep="")  # exp, exp2, exp3 ... as ultralytics numbers its runs
    path.mkdir(parents=True)
    return path


def train_kwargs(settings: Settings, data: Path, out: Path, name: str, epochs: int) -> dict[str, Any]:
    return dict(data=str(data), epochs=epochs, imgsz=settings.imgsz, batch=settings.batch,
                device=settings.device, workers=settings.workers, seed=settings.seed,
                project=str(out.resolve()), name=name, exist_ok=True, plots=False, verbose=False, amp=False)


def validate(weights: Path, settings: Settings, data: Path, out: Path) -> dict[str, float]:
    """Box metrics of `weights` on the data's val split (ultralytics's validator)."""
    from ultralytics import YOLO

    results = YOLO(str(weights)).val(data=str(data), imgsz=settings.imgsz, batch=settings.batch,
                                     device=settings.device, workers=settings.workers, plots=False,
                                     verbose=False, project=str(out.resolve()), name="val", exist_ok=True)
    return val_metrics(results)


_TRACED: dict[tuple, fxgraph.FlatGraph] = {}


def traced(weights: str | Path, imgsz: int, device: str | torch.device = "cpu") -> fxgraph.FlatGraph:
    """fxgraph.trace of a checkpoint, remembering the last one: each step's checkpoint is measured, then pruned by
    the next step, and a trace costs seconds.  Keyed by path, size and mtime, so a rewritten file is traced anew.
    Callers must not modify the graph (pruning.prune and the criteria work on copies)."""
    st = Path(weights).stat()
    key = (str(Path(weights).resolve()), st.st_size, st.st_mtime_ns, imgsz, str(device))
    if key not in _TRACED:
        _TRACED.clear()
        _TRACED[key] = fxgraph.trace(weights, imgsz, device=device)
    return _TRACED[key]


def latency_options(settings: Settings) -> LatencyOptions:
    """How the job measures latency: the `latency_*` settings, torch on the configured `device`."""
    device = str(torch_device(settings.device)) if settings.latency_runtime == "torch" else "cpu"
    return LatencyOptions(imgsz=settings.latency_imgsz, runtime=settings.latency_runtime, device=device,
                          threads=settings.latency_threads, warmup=settings.latency_warmup,
                          repeats=settings.latency_repeats)


def latency_fields(model: torch.nn.Module, settings: Settings, reference: Path | None = None) -> dict[str, float]:
    """latency_ms (minimum), latency_median_ms and speedup (reference's minimum / this one's) of a report row;
    with a `reference` (the unpruned checkpoint) both are timed interleaved in one call, so the speed-up holds
    on a noisy machine; without one, speedup is 1 (the row is the reference)."""
    models = [model] if reference is None else [model, fxgraph.load_ultralytics(reference)]
    lat = measure_latency(models, latency_options(settings))
    return {"latency_ms": lat[0].min_ms, "latency_median_ms": lat[0].median_ms,
            "speedup": lat[-1].min_ms / lat[0].min_ms}


def measure(weights: Path, settings: Settings, data: Path, out: Path, step: Any, criterion: str,
            reference: Path | None = None) -> dict:
    """One report row: size (fxgraph.stats), latency (pruning.measure at `latency_imgsz`, with the speed-up against
    `reference`, the unpruned checkpoint) and validation metrics of a checkpoint."""
    graph = traced(weights, settings.imgsz)
    row = {"step": step, "criterion": criterion, "weights": relative_to(weights, out), "params": stats.num_params(graph),
           "gflops": stats.gflops(graph), **latency_fields(graph.model, settings, reference)}
    row.update(validate(weights, settings, data, out))
    return row


def check_reachable(settings: Settings, target: float | None, metric: str, scope: str) -> None:
    """Before any training: refuse a `latency_imgsz` that is not a multiple of the model's largest stride, and a
    `target` fraction of `metric` that `scope` cannot reach (None: no target to check).  The model (`pretrained`,
    or `model` built from its yaml) is cut by the largest plan the scope and `min_channels` allow, a dry run for
    params/GFLOPs, timed against itself uncut for latency: what can be removed depends on the architecture, not on
    the weights or the criterion."""
    from ..api import plan_for_target

    graph = fxgraph.trace(settings.pretrained or settings.model, settings.imgsz)
    stride = int(max(graph.stride))
    if settings.latency_imgsz % stride:
        raise PruningError(f"latency_imgsz={settings.latency_imgsz} must be a multiple of the model's stride "
                           f"{stride}, e.g. {max(stride, settings.latency_imgsz // stride * stride)}")
    if target is not None:
        plan_for_target(graph, target, metric=metric, scope=scope, criterion="random",
                        min_channels=settings.min_channels, round_to=settings.round_to, resolution=1.0,
                        latency=latency_options(settings))  # the largest plan only


def latency_step_plan(graph: fxgraph.FlatGraph, criterion: Criterion, settings: Settings, speedup: float):
    """A step's plan under target_metric=latency: `step_ratio` of the remaining channels, or fewer when fewer
    already bring the latency to the target.  `speedup` is the current model's over the unpruned one (its report
    row); the fraction of the current latency still to remove is 1 - (1 - target) * speedup, and the channel
    ratio that removes it is bisected in [0, step_ratio], each candidate cut and timed against `graph`
    (pruning.plan_for_target)."""
    from ..api import plan, plan_for_target
    from ..errors import PlanError

    s = settings
    options = dict(scope=s.scope, criterion=criterion, min_channels=s.min_channels, round_to=s.round_to)
    remaining = 1 - (1 - s.target) * speedup
    if remaining > 0:
        try:
            return plan_for_target(graph, remaining, metric="latency", latency=latency_options(s),
                                   max_ratio=s.step_ratio, resolution=max(s.step_ratio / 16, 1e-3), **options)[0]
        except PlanError:  # step_ratio alone does not reach the target: take the whole step
            pass
    return plan(graph, ratio=s.step_ratio, **options)


def relative_to(path: str | Path, root: Path) -> str:
    """`path` relative to `root` when inside it (reports do not record one machine's absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write state.json atomically: an interruption leaves the previous state intact."""
    write_text(out / "state.json", json.dumps(state, indent=2, default=str), error=OutputError)


def log(message: str) -> None:
    """One line of the job's own output, through ultralytics's logger (rank 0 only under torchrun)."""
    from ultralytics.utils import LOGGER

    LOGGER.info(f"pruning: {message}")


def initial_weights(settings: Settings, data: Path, out: Path, weights_dir: Path) -> Path:
    """Step 0 (`weights/step0.pt`): a copy of `pretrained` when `pretrain_epochs` is 0, else `pretrained` (or the
    `model` yaml) trained `pretrain_epochs` epochs."""
    target = weights_dir / "step0.pt"
    if not settings.trains_first:
        shutil.copyfile(settings.pretrained, target)  # read once; the run works on its own copy
        return target
    return train_to(str(settings.pretrained or settings.model), settings, data, out, settings.pretrain_epochs, target)


def train_to(source: str, settings: Settings, data: Path, out: Path, epochs: int, target: Path,
             name: str = "pretrain") -> Path:
    """Train `source` (weights or a model yaml) with ultralytics's own trainer; copy its best checkpoint to
    `target`.  (A pruned model is fine-tuned with `finetune_to`, whose trainer keeps the pruned architecture.)"""
    from ultralytics import YOLO

    yolo = YOLO(source)
    yolo.train(**train_kwargs(settings, data, out, name, epochs))
    return keep_best(yolo.trainer, target)


def finetune_to(weights: Path, settings: Settings, data: Path, out: Path, name: str, epochs: int,
                target: Path) -> Path:
    """Fine-tune a pruned checkpoint with the trainer that keeps its architecture; best checkpoint -> `target`."""
    yolo = finetune(str(weights), **train_kwargs(settings, data, out, name, epochs))
    return keep_best(yolo.trainer, target)


def keep_best(trainer: Any, target: Path) -> Path:
    """Copy a finished ultralytics trainer's best checkpoint (its last, if it saved no best) to `target`."""
    best = Path(trainer.best)
    shutil.copyfile(best if best.is_file() else trainer.last, target)
    return target


def export_onnx(weights: Path, settings: Settings, weights_dir: Path) -> str:
    """Export with ultralytics (no onnxslim, which it would try to install) next to the final weights."""
    from ultralytics import YOLO

    path = YOLO(str(weights)).export(format="onnx", imgsz=settings.imgsz, simplify=False, dynamic=False,
                                     device="cpu")
    return str(path)

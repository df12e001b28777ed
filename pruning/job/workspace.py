"""The job's workspace: run directories, datasets, the trace cache, calibration, training, measuring, exporting.

Shared by the pipeline (`pruning.job.pipeline`), the criteria sweep (`compare`) and the CLI, so that each number
and each file is made in one place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import fxgraph
from fxgraph import stats

from ..criteria import HSIC, Calibration, Criterion, DetDSHAP, RandomCriterion, Taylor, get_criterion, load_calibration
from ..errors import PruningError
from .measure import cpu_latency_ms, val_metrics
from .synthetic import ShapesConfig, make_shapes_dataset
from .train import finetune

os.environ.setdefault("YOLO_OFFLINE", "1")


def build_criterion(name: str, settings: dict[str, Any], calibration: Callable[[], Calibration]) -> Criterion:
    """The criterion `name` configured from the settings (the calibration data is read only when needed)."""
    if name == "detdshap":
        return DetDSHAP(calibration(), boxes=settings["calib_boxes"], iou=settings["iou"],
                        baseline=settings["baseline"], target=settings["calib_target"])
    if name == "hsic":
        return HSIC(calibration(), lam=settings["hsic_lambda"])
    if name == "taylor":
        return Taylor(calibration())
    if name == "random":
        return RandomCriterion(seed=settings["seed"])
    return get_criterion(name)


def lazy_calibration(settings: dict[str, Any], data: Path, weights: str | Path, rank: int = 0,
                     world: int = 1) -> Callable[[], Calibration]:
    """A function returning the calibration batches (this rank's shard), read from `data` on first call only."""
    cache: list[Calibration] = []

    def calibration() -> Calibration:
        if not cache:
            full = load_calibration(data, task_of(weights), settings["imgsz"], settings["calib_images"],
                                    batch=min(settings["batch"], settings["calib_images"]))
            cache.append(full.shard(rank, world))
        return cache[0]

    return calibration


def dataset(settings: dict[str, Any]) -> Path:
    """The data yaml of the run: the user's, or the synthetic shapes written once under `<project>/../datasets`."""
    if settings["data"] is not None:
        return Path(settings["data"])
    root = Path(settings["project"]).parent / "datasets"
    return make_shapes_dataset(root, ShapesConfig(imgsz=settings["imgsz"], seed=settings["seed"]))


def run_dir(settings: dict[str, Any]) -> Path:
    """`project/name`, or `name2`, `name3`... like ultralytics; with resume, the existing `project/name`."""
    base = Path(settings["project"]) / str(settings["name"])
    if settings["resume"]:
        if not (base / "state.json").is_file():
            raise PruningError(f"resume: {base} has no state.json to continue from")
        return base
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}{k}")
    path.mkdir(parents=True)
    return path


def train_kwargs(settings: dict[str, Any], data: Path, out: Path, name: str, epochs: int) -> dict[str, Any]:
    return dict(data=str(data), epochs=epochs, imgsz=settings["imgsz"], batch=settings["batch"],
                device=settings["device"], workers=settings["workers"], seed=settings["seed"],
                project=str(out.resolve()), name=name, exist_ok=True, plots=False, verbose=False, amp=False)


def validate(weights: Path, settings: dict[str, Any], data: Path, out: Path) -> dict[str, float]:
    """Box metrics of `weights` on the data's val split (ultralytics's validator)."""
    from ultralytics import YOLO

    results = YOLO(str(weights)).val(data=str(data), imgsz=settings["imgsz"], batch=settings["batch"],
                                     device=settings["device"], workers=settings["workers"], plots=False,
                                     verbose=False, project=str(out.resolve()), name="val", exist_ok=True)
    return val_metrics(results)


_TRACED: dict[tuple, fxgraph.FlatGraph] = {}


def traced(weights: str | Path, imgsz: int) -> fxgraph.FlatGraph:
    """fxgraph.trace of a checkpoint, remembering the last one: each step's checkpoint is measured, then pruned by
    the next step, and a trace costs seconds.  Keyed by path, size and mtime, so a rewritten file is traced anew.
    Callers must not modify the graph (pruning.prune and the criteria work on copies)."""
    st = Path(weights).stat()
    key = (str(Path(weights).resolve()), st.st_size, st.st_mtime_ns, imgsz)
    if key not in _TRACED:
        _TRACED.clear()
        _TRACED[key] = fxgraph.trace(weights, imgsz)
    return _TRACED[key]


def measure(weights: Path, settings: dict[str, Any], data: Path, out: Path, step: Any, criterion: str) -> dict:
    """One report row: size (fxgraph.stats), CPU latency and validation metrics of a checkpoint."""
    graph = traced(weights, settings["imgsz"])
    row = {"step": step, "criterion": criterion, "weights": str(weights), "params": stats.num_params(graph),
           "gflops": stats.gflops(graph), "latency_ms": cpu_latency_ms(graph.model, settings["imgsz"])}
    row.update(validate(weights, settings, data, out))
    return row


def save_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(out / "state.json")  # atomic: an interruption leaves the previous state intact


def log(message: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(f"pruning: {message}")


def task_of(weights: str | Path) -> str:
    return fxgraph.yolo.TASK_OF_HEAD[type(fxgraph.load_ultralytics(weights).model[-1]).__name__]


def initial_weights(settings: dict[str, Any], data: Path, out: Path, weights_dir: Path) -> Path:
    """Step 0: a copy of `pretrained` (optionally trained further), or a model trained from its yaml."""
    from ultralytics import YOLO

    target = weights_dir / "step0.pt"
    if settings["pretrained"] is not None and settings["pretrain_epochs"] == 0:
        shutil.copyfile(settings["pretrained"], target)  # read once; the run works on its own copy
        return target
    yolo = YOLO(str(settings["pretrained"] or settings["model"]))
    yolo.train(**train_kwargs(settings, data, out, "pretrain", settings["pretrain_epochs"]))
    shutil.copyfile(yolo.trainer.best if Path(yolo.trainer.best).is_file() else yolo.trainer.last, target)
    return target


def finetune_to(weights: Path, settings: dict[str, Any], data: Path, out: Path, name: str, epochs: int,
              target: Path) -> Path:
    yolo = finetune(str(weights), **train_kwargs(settings, data, out, name, epochs))
    best = Path(yolo.trainer.best)
    shutil.copyfile(best if best.is_file() else yolo.trainer.last, target)
    return target


def export_onnx(weights: Path, settings: dict[str, Any], weights_dir: Path) -> str:
    """Export with ultralytics (no onnxslim, which it would try to install) next to the final weights."""
    from ultralytics import YOLO

    path = YOLO(str(weights)).export(format="onnx", imgsz=settings["imgsz"], simplify=False, dynamic=False,
                                     device="cpu")
    return str(path)

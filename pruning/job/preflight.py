"""Checks of the job's inputs before its run directory exists: where it writes, the data, and the weights.

`load_config` checks each setting alone (types, ranges, choices, device, files exist); `check_inputs` opens what
they name: the project folder must take new folders, the data yaml must read and find its images, the weights must
load as an ultralytics model of any task, trace at `imgsz`, and predict as many classes as the data has when
they are pruned as they are.  Each failure is a `ConfigError` naming the setting and the user's own path, raised
before anything is written (the run's copy `weights/step0.pt` would otherwise be what a later error names).
`check_score_inputs` does the same for `score`: its --out, the dataset folder and the classes of the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fxgraph
from fxgraph.outputs import check_new_file, probe_writable

from ..errors import OutputError

from .config import ConfigError, Settings
from .synthetic import KPT_SHAPE as SHAPES_KPT_SHAPE
from .synthetic import task_classes
from .tasks import DataTaskError, class_folders, data_tasks, describe_tasks, model_source, model_task
from .tracecache import traced
from .trees import CLASSES as TREES_CLASSES
from .trees import TREES, deepforest_data_dir


def check_inputs(settings: Settings) -> None:
    """Raise ConfigError naming the first input the job could not use; writes nothing."""
    check_project(settings.project)
    task = check_data_task(settings)
    check_criterion_task(settings, task)
    classes = data_classes(settings, task)
    check_weights(settings, classes)


def check_criterion_task(settings: Settings, task: str | None) -> None:
    """The criterion can score a model of `task`: every criterion scores every task, except DetDSHAP explaining
    only box coordinates (calib_target=box) on a classifier, which has no box; ConfigError saying what to use."""
    if task == "classify" and settings.criterion == "detdshap" and settings.calib_target == "box":
        key, source = model_source(settings)
        raise ConfigError(f"criterion=detdshap with calib_target=box explains box coordinates, but {key}={source} "
                          f"is a classifier (no boxes): use calib_target=class or all (its class), or another "
                          f"criterion")


def check_data_task(settings: Settings) -> str | None:
    """The model's task, once the data is known to serve it; DataTaskError naming the data, its task and the
    model's otherwise.  None when the model does not load (`check_weights` then says why)."""
    key, source = model_source(settings)
    try:
        task = model_task(source)
    except Exception:
        return None
    data = settings.data
    if data is None or not (data == TREES or Path(data).exists()):
        info = {"kpt_shape": list(SHAPES_KPT_SHAPE)}  # the synthetic shapes are written for the model's task
    else:  # (a missing file is data_classes's to report)
        info = check_data_yaml(data) if Path(data).is_file() else {}
        tasks = data_tasks(data, info or None)
        if task not in tasks:
            raise DataTaskError(f"data={data} holds {describe_tasks(tasks)} labels but {key}={source} is a model "
                                f"for {task}: give data labelled for {task}, or leave data unset for the synthetic "
                                f"shapes of the model's task")
    if task == "pose" and not settings.trains_first:  # pruned as it is: its keypoints must be the data's
        shape = list(fxgraph.load_ultralytics(source).model[-1].kpt_shape)
        if shape != list(info.get("kpt_shape") or []):
            raise DataTaskError(f"{key}={source} predicts keypoints of shape {shape} but data="
                                f"{data or 'the synthetic shapes'} has kpt_shape {info.get('kpt_shape')}: a pruned "
                                f"head cannot be re-sized, so use data with the model's keypoints, or set "
                                f"pretrain_epochs > 0 to train a head for these first")
    return task


def check_project(project: str | Path) -> None:
    """`project` is (or can become) a folder this process can create run directories in."""
    check_folder(project, f"project={project}", "choose another project=")


def check_folder(folder: str | Path, what: str, fix: str) -> None:
    """`folder` is (or can become: missing parents are created when written) a folder this process can write in;
    ConfigError naming `what` and the `fix` otherwise.  Probed by a real write, since os.access says yes to root."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what}: {existing} is a file, not a folder; {fix}")
    probe_writable(existing, what=what, error=ConfigError)


def check_score_inputs(settings: Settings, out: str | Path | None, force: bool = False) -> None:
    """`score`'s inputs, before any dataset is written or any work starts: the --out file (not there unless `force`,
    its folder writable), the folder the synthetic or trees dataset would be written to, and the weights (load,
    trace, and predict every class of the data: the calibration labels must be classes of the model)."""
    if out:
        check_new_file(out, overwrite=force, error=OutputError)
    if settings.data is None or settings.data == TREES:
        root = Path(settings.project).parent / "datasets"
        check_folder(root, f"the dataset folder {root} (next to project={settings.project})",
                     "choose another project= or give data=")
    classes = data_classes(settings)
    check_weights(settings, classes, trained_head=False)


def data_classes(settings: Settings, task: str | None = None) -> int:
    """The number of classes of the job's data; a user's yaml must parse and find images in train and val."""
    if settings.data is None:
        return len(task_classes(task or "detect"))
    if Path(settings.data).is_dir():
        return len(class_folders(settings.data))
    if settings.data == TREES:
        deepforest_data_dir()  # PruningError saying how to install deepforest's images when they are missing
        return len(TREES_CLASSES)
    return len(check_data_yaml(settings.data)["names"])


def check_data_yaml(data: str | Path) -> dict[str, Any]:
    """ultralytics's own reading of the data yaml (never downloading), with images found in train and val."""
    from ultralytics.data.utils import check_det_dataset

    try:
        info = check_det_dataset(str(data), autodownload=False)
    except Exception as exc:  # ultralytics raises SyntaxError, FileNotFoundError, TypeError, yaml errors ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"data={data}: ultralytics cannot use it ({first}); the job never downloads a "
                          f"dataset: put its images in place first") from None
    for split in ("train", "val"):
        if not count_images(info[split]):
            raise ConfigError(f"data={data}: no images in its '{split}' split ({info[split]})")
    return info


def count_images(split: str | list[str]) -> int:
    """How many image files a split names (folders are searched recursively, .txt files list one per line)."""
    from ultralytics.data.utils import IMG_FORMATS

    total = 0
    for entry in split if isinstance(split, list) else [split]:
        p = Path(entry)
        if p.is_dir():
            total += sum(1 for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS and f.is_file())
        elif p.is_file() and p.suffix == ".txt":
            lines = [line.strip() for line in p.read_text(errors="replace").splitlines() if line.strip()]
            total += sum(1 for line in lines if (p.parent / line).is_file() or Path(line).is_file())
        elif p.is_file() and p.suffix[1:].lower() in IMG_FORMATS:
            total += 1
    return total


def check_weights(settings: Settings, data_classes: int, trained_head: bool | None = None) -> None:
    """The model the job starts from (`pretrained`, else the `model` yaml) loads, has a stride that divides
    `imgsz`, traces, and (when pruned as it is, without training first) predicts the data's number of classes.
    `trained_head=False` (score: the weights are used as they are): the data must have no class the model lacks."""
    key, source = ("pretrained", settings.pretrained) if settings.pretrained is not None else ("model", settings.model)
    try:
        model = fxgraph.load_ultralytics(source)
    except fxgraph.FxGraphError as exc:
        text = str(exc)
        raise ConfigError(f"{key}={source}: {text.removeprefix(f'{source}: ')}") from None
    except Exception as exc:  # ultralytics building a foreign or broken yaml
        raise ConfigError(f"{key}={source}: cannot build an ultralytics model from it ({type(exc).__name__}: "
                          f"{exc})") from None
    stride = int(max(getattr(model, "stride", [32])))
    if settings.imgsz % stride:
        low, high = max(stride, settings.imgsz // stride * stride), (settings.imgsz // stride + 1) * stride
        raise ConfigError(f"imgsz={settings.imgsz} is not a multiple of the largest stride {stride} of {key}={source}; "
                          f"use imgsz={low} or {high}")
    try:  # a checkpoint through the job's trace cache: the run's copy step0.pt is then not traced again
        graph = traced(source, settings.imgsz) if Path(source).is_file() and Path(source).suffix == ".pt" \
            else fxgraph.trace(model, settings.imgsz)
    except fxgraph.FxGraphError as exc:
        raise ConfigError(f"{key}={source} cannot be pruned: {exc}") from None
    nc = graph.nc
    if trained_head is False:
        if data_classes > nc:
            raise ConfigError(f"pretrained={source} predicts {nc} classes (0..{nc - 1}) but data="
                              f"{settings.data or 'the synthetic shapes'} has {data_classes}: its labels would "
                              f"name classes the model lacks; score on data with the model's classes (data=...)")
        return
    if settings.trains_first:
        return  # ultralytics's trainer gives the model a head for the data's classes
    if nc != data_classes:
        raise ConfigError(f"pretrained={source} predicts {nc} classes but data={settings.data or 'the synthetic shapes'} "
                          f"has {data_classes}: a pruned head cannot be re-sized, so use data with the model's "
                          f"classes, or set pretrain_epochs > 0 to train a head for these first")

"""The job's data: the dataset yaml of a run (the user's, `trees` or the synthetic shapes, written once) and the
calibration batches read from it on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..criteria import Calibration, load_calibration
from .rundir import log
from .synthetic import ShapesConfig, make_shapes_dataset, shapes_dataset_path
from .tasks import model_source, model_task
from .tracecache import traced
from .trees import TREES, make_trees_dataset, trees_dataset_path

if TYPE_CHECKING:
    from .config import Settings


def dataset(settings: Settings) -> Path:
    """The data of the run: the user's, `trees` (deepforest's tiled aerial images) or the synthetic shapes labelled
    for the model's task (a data yaml, or a folder of class folders for classify), written once under
    `<project>/../datasets`."""
    root = Path(settings.project).parent / "datasets"
    if settings.data == TREES:
        if not trees_dataset_path(root).is_file():
            log(f"writing the tiled trees dataset from deepforest's images under {root} ...")
        return make_trees_dataset(root)
    if settings.data is not None:
        return Path(settings.data)
    cfg = ShapesConfig(imgsz=settings.imgsz, seed=settings.seed)
    task = model_task(model_source(settings)[1])  # the synthetic labels of the model's task
    if not shapes_dataset_path(root, cfg, task).exists():
        log(f"writing the synthetic {task} dataset ({cfg.n_train} train, {cfg.n_val} val images) under {root} ...")
    return make_shapes_dataset(root, cfg, task)


def lazy_calibration(settings: Settings, data: Path | Callable[[], Path], weights: str | Path, rank: int = 0,
                     world: int = 1) -> Callable[[], Calibration]:
    """A function returning the calibration batches (this rank's shard), read from `data` (a yaml, or a function
    giving it) on first call only."""
    cache: list[Calibration] = []

    def calibration() -> Calibration:
        if not cache:
            graph = traced(weights, settings.imgsz)  # the task and stride recorded at trace time (usually cached)
            full = load_calibration(data() if callable(data) else data, graph.task, settings.imgsz,
                                    settings.calib_images, batch=min(settings.batch, settings.calib_images),
                                    stride=int(max(graph.stride)))
            cache.append(full.shard(rank, world))
        return cache[0]

    return calibration

"""The numbers of a report row: size (fxgraph.stats), latency (`timing`, deployment latency in pruning.latency)
and validation metrics, the one place mAP is computed, and each task's primary quality metric (`primary`), the one
number the job's stop rule, the report and compare read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from fxgraph import stats

from .rundir import relative_to
from .timing import latency_fields
from .tracecache import traced

if TYPE_CHECKING:
    from .config import Settings


class PrimaryMetric(NamedTuple):
    """A task's quality metric: the key of a report row holding it, and its label for tables and plots."""

    key: str
    label: str


# pose: the keypoints' mAP50-95 (OKS), since the keypoints are what a pose model is for and what its protected branch
# predicts; its box mAP stays in the row.  OBB: ultralytics's box metric of an OBB model is over the rotated boxes.
PRIMARY = {
    "detect": PrimaryMetric("map50_95", "mAP50-95"),
    "segment": PrimaryMetric("map50_95", "mAP50-95"),  # of the boxes, as for detect
    "obb": PrimaryMetric("map50_95", "mAP50-95 (rotated boxes)"),
    "pose": PrimaryMetric("map50_95_pose", "pose mAP50-95"),
    "classify": PrimaryMetric("top1", "top-1"),
}


def primary_metric(task: str | None) -> PrimaryMetric:
    """The quality metric of `task` (rows of before the task was recorded: detect's box mAP50-95)."""
    return PRIMARY.get(task or "detect", PRIMARY["detect"])


def primary(row: Mapping[str, Any]) -> float:
    """The value of a report row's primary metric (the task recorded in the row by `measure`)."""
    return float(row[primary_metric(row.get("task")).key])


def val_metrics(results: Any) -> dict[str, float]:
    """mAP50, mAP50-95, precision, recall and F1 of the boxes from an ultralytics validation result (rotated boxes
    for OBB), with the keypoints' mAP50 and mAP50-95 for pose; top-1 and top-5 accuracy for classify."""
    if hasattr(results, "top1"):  # ClassifyMetrics: no boxes
        return {"top1": float(results.top1), "top5": float(results.top5)}
    pose = getattr(results, "pose", None)
    extra = {"map50_pose": float(pose.map50), "map50_95_pose": float(pose.map)} if pose is not None else {}
    return {**box_metrics(results.box), **extra}


def box_metrics(box: Any) -> dict[str, float]:
    """mAP50, mAP50-95, precision, recall and F1 of ultralytics's box `Metric`."""
    p, r = float(box.mp), float(box.mr)
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
    }


def validate(weights: Path, settings: Settings, data: Path, out: Path) -> dict[str, float]:
    """Box metrics of `weights` on the data's val split (ultralytics's validator)."""
    from ultralytics import YOLO

    results = YOLO(str(weights)).val(data=str(data), imgsz=settings.imgsz, batch=settings.batch,
                                     device=settings.device, workers=settings.workers, plots=False,
                                     verbose=False, project=str(out.resolve()), name="val", exist_ok=True)
    return val_metrics(results)


def measure(weights: Path, settings: Settings, data: Path, out: Path, step: Any, criterion: str,
            reference: Path | None = None) -> dict:
    """One report row: size (fxgraph.stats), latency (at `latency_imgsz`, with the speed-up against `reference`,
    the unpruned checkpoint) and validation metrics of a checkpoint."""
    graph = traced(weights, settings.imgsz)
    row = {"step": step, "criterion": criterion, "task": graph.task, "weights": relative_to(weights, out),
           "params": stats.num_params(graph),
           "gflops": stats.gflops(graph), **latency_fields(graph.model, settings, reference)}
    row.update(validate(weights, settings, data, out))
    return row

"""Whether a model still detects anything on its own calibration images: a plan can cut a model until it predicts
nothing, and mAP alone does not say why.  Counted with ultralytics's predict at its default conf 0.25 on the
letterboxed calibration batches; a count of 0 is a warning in the log, in Python's `warnings` and in report.md."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import PruningError

CONF = 0.25  # ultralytics's predict default


class BlindModelWarning(PruningError, UserWarning):
    """A model of the job detects nothing on its calibration images."""


def calibration_detections(weights: str | Path, batches: Sequence[Mapping[str, Any]], device: Any = None,
                           conf: float = CONF) -> int:
    """How many boxes `weights` predicts at `conf` over the calibration `batches` (uint8 (B, 3, h, w) images)."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    total = 0
    for batch in batches:
        images = batch["img"].float() / 255.0
        with torch.no_grad():
            results = model.predict(images, conf=conf, device=device, verbose=False, save=False)
        total += sum(len(r) for r in results)
    return total


def blind_message(step: Any, weights: str | Path, n_images: int, conf: float = CONF) -> str:
    """The warning for a model of step `step` that detects nothing on its `n_images` calibration images."""
    why = ("the unpruned model: train it longer (pretrain_epochs) or give data with the model's classes"
           if step == 0 else "the plan may have cut too much (raise min_channels, lower step_ratio or target)")
    return (f"step {step}: {Path(weights).name} detects nothing at conf {conf} on its {n_images} calibration "
            f"image(s); {why}")


def warn_if_blind(row: dict[str, Any], weights: str | Path, batches: Sequence[Mapping[str, Any]],
                  device: Any = None) -> str | None:
    """Count the detections of `weights` into `row['calib_detections']`; warn and return the message at 0."""
    row["calib_detections"] = calibration_detections(weights, batches, device)
    if row["calib_detections"]:
        return None
    message = blind_message(row.get("step"), weights, sum(int(b["img"].shape[0]) for b in batches))
    row["warning"] = message
    warnings.warn(BlindModelWarning(message), stacklevel=2)
    return message


def report_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """report.md's warning lines: one per step whose model detected nothing on the calibration images."""
    return [f"**Warning:** {row['warning']}." for row in rows if row.get("warning")]

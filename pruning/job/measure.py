"""Validation metrics: the one place these user-facing numbers are computed (latency: pruning.measure)."""

from __future__ import annotations

from typing import Any


def val_metrics(results: Any) -> dict[str, float]:
    """mAP50, mAP50-95, precision, recall and F1 of the boxes from an ultralytics validation result."""
    box = results.box
    p, r = float(box.mp), float(box.mr)
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
    }

"""Latency and validation metrics: the one place these user-facing numbers are computed."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn


def cpu_latency_ms(model: nn.Module, imgsz: int | tuple[int, int], runs: int = 10, warmup: int = 2) -> float:
    """Median wall time in milliseconds of one eval forward of a 1-image batch on the CPU, in float32.

    The model is deep-copied, so the caller's model keeps its device, dtype and mode.
    """
    import copy

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    net = copy.deepcopy(model).float().cpu().eval()
    x = torch.rand(1, 3, h, w)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            net(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * times[len(times) // 2]


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

"""The job's export of the final checkpoint (ONNX, with ultralytics's exporter)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings


def export_onnx(weights: Path, settings: Settings, weights_dir: Path) -> str:
    """Export with ultralytics (no onnxslim, which it would try to install) next to the final weights."""
    from ultralytics import YOLO

    path = YOLO(str(weights)).export(format="onnx", imgsz=settings.imgsz, simplify=False, dynamic=False,
                                     device="cpu")
    return str(path)

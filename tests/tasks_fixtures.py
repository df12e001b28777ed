"""Session-cached models and traces of every ultralytics task and family that fxgraph and relprop support beyond
detect/segment of v5u-v11/26: pose, OBB, classify, YOLOv10 and YOLO12 (issue 27).  Each random-weight model (BatchNorm
recalibrated, tests/conftest.py::random_model) is built once and traced at most once per (size, dtype, branch)."""

from __future__ import annotations

import functools

import torch

import fxgraph

from tests.conftest import positive_ltrb, random_model

# yaml -> (task, box format, kpt_shape) on the model's default branch
TASK_MODELS = {
    "yolov8n-pose.yaml": ("pose", "xywh", (17, 3)),
    "yolo11n-pose.yaml": ("pose", "xywh", (17, 3)),
    "yolo26n-pose.yaml": ("pose", "xywh", (17, 3)),
    "yolov8n-obb.yaml": ("obb", "xywhr", None),
    "yolo11n-obb.yaml": ("obb", "xywhr", None),
    "yolo26n-obb.yaml": ("obb", "xywhr", None),
    "yolov8n-cls.yaml": ("classify", None, None),
    "yolo11n-cls.yaml": ("classify", None, None),
    "yolov10n.yaml": ("detect", "xywh", None),
    "yolo12n.yaml": ("detect", "xywh", None),
    "yolo12n-seg.yaml": ("segment", "xywh", None),
}
# (yaml, branch) traced: every model on its default branch, YOLOv10 also on its end-to-end branch
CASES = [(yaml, None) for yaml in TASK_MODELS] + [("yolov10n.yaml", "one2one")]


@functools.lru_cache(maxsize=None)
def task_model(yaml: str) -> torch.nn.Module:
    """The recalibrated random-weight float32 model of `yaml`, built once; do not mutate it.  A reg_max = 1 head
    (YOLO26) gets small positive raw box distances (conftest.positive_ltrb): random ones make x2 < x1."""
    model = random_model(yaml)
    if getattr(model.model[-1], "reg_max", None) == 1:
        positive_ltrb(model, 1e-3)
    return model


@functools.lru_cache(maxsize=None)
def task_trace(yaml: str, imgsz: int, dtype: torch.dtype = torch.float64, branch: str | None = None,
               fold_bn: bool = False) -> fxgraph.FlatGraph:
    """The FlatGraph of `task_model(yaml)` at `imgsz` in `dtype`, traced once per session; do not mutate it."""
    return fxgraph.trace(task_model(yaml), imgsz=imgsz, dtype=dtype, branch=branch, fold_bn=fold_bn)

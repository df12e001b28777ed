"""Shared fixtures: offline ultralytics, cached traces and models so each model is exported once per session."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

import functools  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import fxgraph  # noqa: E402


@functools.lru_cache(maxsize=None)
def cached_model(name: str | None):
    """The ultralytics model for a yaml name (None: the embedded YOLOv8s), built once; do not mutate it."""
    torch.manual_seed(0)
    return fxgraph.load_ultralytics(name)


@functools.lru_cache(maxsize=None)
def cached_trace(name: str | None, imgsz: int, fold_bn: bool = False) -> fxgraph.FlatGraph:
    """The float32 FlatGraph of `cached_model(name)` at `imgsz`, traced once per session; do not mutate it."""
    return fxgraph.trace(cached_model(name), imgsz=imgsz, fold_bn=fold_bn)


@pytest.fixture
def yolov8n_320() -> fxgraph.FlatGraph:
    return cached_trace("yolov8n.yaml", 320)

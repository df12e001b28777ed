"""Exceptions of the fxgraph package: each names the file, module or op at fault and what to do."""

from __future__ import annotations


class FxGraphError(Exception):
    """Base class of every error raised by fxgraph."""


class ModelLoadError(FxGraphError):
    """A weights or yaml file could not be found or read as an ultralytics model."""


class UnsupportedModelError(FxGraphError):
    """The model is not a YOLOv8-style ultralytics detector or segmenter."""


class UnsupportedOpError(FxGraphError):
    """The traced graph holds an op that no later stage (relprop, pruning) knows."""


class ArgumentError(FxGraphError, ValueError):
    """An argument (imgsz, ...) has the wrong type or value; the message says what is accepted."""


class OutputError(FxGraphError, OSError):
    """An output file cannot be written where asked: it exists (and no overwrite was allowed), or its folder is not
    writable; raised before any work."""

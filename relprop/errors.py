"""Exceptions of the relprop package: each names the image, box, node or op at fault and what to do."""

from __future__ import annotations


class RelpropError(Exception):
    """Base class of every error raised by relprop."""


class OptionsError(RelpropError, ValueError):
    """An explain option (target, iou, conf, cls, max_det, batch, imgsz, device, dtype) is out of its range."""


class ImageError(RelpropError):
    """An image (or a background image) could not be found, read or interpreted."""


class BoxError(RelpropError):
    """A box to explain is malformed: not four numbers, degenerate, or outside the image."""


class NoMatchError(BoxError):
    """No raw candidate of the detector overlaps the box enough; the message reports the best IoU found."""

    def __init__(self, message: str, best_iou: float):
        super().__init__(message)
        self.best_iou = best_iou


class RuleError(RelpropError):
    """A graph node has no relevance rule, or a rule was given for a node it cannot handle."""


class BaselineError(RelpropError):
    """A reference (baseline) specification could not be turned into reference inputs."""


class OutputError(RelpropError, OSError):
    """An output folder or file cannot be written where asked (exists without --force, not writable); raised
    before any explanation is computed."""

"""The job's trace cache: each step's checkpoint is measured, then pruned by the next step, and a trace costs
seconds, so the last trace is remembered, keyed by the file's bytes: the run's copy `step0.pt` of the weights that
preflight traced is not traced again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

import fxgraph

_TRACED: dict[tuple, fxgraph.FlatGraph] = {}


def traced(weights: str | Path, imgsz: int, device: str | torch.device = "cpu") -> fxgraph.FlatGraph:
    """fxgraph.trace of a checkpoint, remembering the last one.  Keyed by the file's content (a rewritten file is
    traced anew, a byte copy is not), size and device.  Callers must not modify the graph (pruning.prune and the
    criteria work on copies)."""
    key = (hashlib.sha1(Path(weights).read_bytes()).hexdigest(), imgsz, str(device))
    if key not in _TRACED:
        _TRACED.clear()
        _TRACED[key] = fxgraph.trace(weights, imgsz, device=device)
    return _TRACED[key]

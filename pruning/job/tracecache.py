"""The job's trace cache: each step's checkpoint is measured, then pruned by the next step, and a trace costs
seconds, so the last trace is remembered."""

from __future__ import annotations

from pathlib import Path

import torch

import fxgraph

_TRACED: dict[tuple, fxgraph.FlatGraph] = {}


def traced(weights: str | Path, imgsz: int, device: str | torch.device = "cpu") -> fxgraph.FlatGraph:
    """fxgraph.trace of a checkpoint, remembering the last one.  Keyed by path, size and mtime, so a rewritten
    file is traced anew.  Callers must not modify the graph (pruning.prune and the criteria work on copies)."""
    st = Path(weights).stat()
    key = (str(Path(weights).resolve()), st.st_size, st.st_mtime_ns, imgsz, str(device))
    if key not in _TRACED:
        _TRACED.clear()
        _TRACED[key] = fxgraph.trace(weights, imgsz, device=device)
    return _TRACED[key]

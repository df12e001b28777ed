"""Saving a pruned ultralytics model as an ordinary ultralytics checkpoint, never over the user's weights.

ultralytics checkpoints pickle the whole model object, so a pruned model made only of ultralytics and torch
classes loads with plain `YOLO(path)` in a process where this project is not installed.  Nothing of ours is
pickled: the pruning record is stored as plain Python data.
"""

from __future__ import annotations

import copy
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from fxgraph.outputs import atomic_path, check_new_file

from .errors import OutputError, OverwriteError


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    never: Iterable[str | os.PathLike] = (),
    half: bool = True,
    record: dict[str, Any] | None = None,
) -> Path:
    """Write `model` to `path` the way ultralytics's trainer writes its final weights.

    Refuses (OverwriteError) to replace an existing file unless `overwrite`, and always refuses the files in
    `never` (the weights the model was loaded from); a name without .pt or an unwritable folder is an OutputError
    naming `path`, raised before anything is written.  The write is atomic (temporary file in the same folder, then
    rename) and the file gets the usual mode (0666 minus the umask, e.g. 0644; a replaced file keeps its mode).
    `half` stores FP16 tensors as ultralytics does; `record` (plain data) is stored under the key 'pruning'.
    """
    import ultralytics

    path = Path(path)
    if path.suffix != ".pt":
        raise OutputError(f"{path}: ultralytics checkpoints end in .pt; choose a name like {path.stem or 'model'}.pt")
    target = path.resolve()
    for p in never:
        if p is not None and Path(p).resolve() == target:
            raise OverwriteError(f"{path} holds the weights this model was pruned from; save it under a new name")
    if path.is_file() and not overwrite:
        raise OverwriteError(f"{path} exists; choose another name or pass overwrite=True")
    check_new_file(path, overwrite=True, error=OutputError)  # not a folder, in a writable place
    snapshot = copy.deepcopy(model).to("cpu").eval()
    if half:
        snapshot = snapshot.half()
    for p in snapshot.parameters():
        p.requires_grad_(False)
    from ultralytics.nn.tasks import guess_model_task

    args = dict(getattr(model, "args", None) or {}) if isinstance(getattr(model, "args", None), dict) else {}
    args["task"] = guess_model_task(model)  # a yaml-built model has no args; YOLO(path) picks its task from here
    ckpt = {
        "date": datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": snapshot,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": args,
        "train_metrics": None,
        "train_results": None,
        "pruning": record or {},
    }
    with atomic_path(path, error=OutputError) as tmp:
        torch.save(ckpt, tmp)
    return path

"""Fine-tuning a pruned model with ultralytics's own trainer, without it rebuilding the unpruned architecture.

ultralytics's trainers build a fresh model from `model.yaml` and copy over only the weights whose shapes match,
so `YOLO("pruned.pt").train(...)` would silently train the *unpruned* network.  These trainers' `get_model`
returns the loaded pruned model itself:

    YOLO("pruned.pt").train(trainer=PrunedDetectionTrainer, data=..., epochs=...)
    pruning.finetune("pruned.pt", data=..., epochs=...)      # picks the trainer for the task
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer

from ..checkpoint import save_checkpoint
from ..errors import PruningError


class PrunedModelMixin:
    """`get_model` hands back the (pruned) model it was given instead of building one from the yaml."""

    def get_model(self, cfg: Any = None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        if not isinstance(weights, nn.Module):
            raise PruningError(
                "a pruned-model trainer needs the pruned model as its weights: load the pruned checkpoint and "
                "train it, e.g. YOLO('pruned.pt').train(trainer=PrunedDetectionTrainer, ...), with pretrained "
                "left at True"
            )
        head = weights.model[-1]
        nc = self.data["nc"]
        if int(head.nc) != int(nc):
            raise PruningError(
                f"the pruned model predicts {head.nc} classes but the dataset {self.args.data} has {nc}; "
                "a pruned head cannot be re-sized, fine-tune on data with the same classes"
            )
        model = self.set_model_names_for_load(weights)
        for p in model.parameters():
            p.requires_grad_(True)
        return model


class PrunedDetectionTrainer(PrunedModelMixin, DetectionTrainer):
    """ultralytics DetectionTrainer that trains the pruned architecture it is given."""


class PrunedSegmentationTrainer(PrunedModelMixin, SegmentationTrainer):
    """ultralytics SegmentationTrainer that trains the pruned architecture it is given."""


TRAINERS = {"detect": PrunedDetectionTrainer, "segment": PrunedSegmentationTrainer}


def trainer_for(task: str) -> type:
    """The pruned-model trainer class of an ultralytics task ('detect' or 'segment')."""
    try:
        return TRAINERS[task]
    except KeyError:
        raise PruningError(f"no pruned-model trainer for task {task!r}; supported: {sorted(TRAINERS)}") from None


def finetune(model: Any, **overrides: Any):
    """Fine-tune a pruned model (a checkpoint path, a `pruning.Pruned`, or an ultralytics model) with
    ultralytics's trainer and key=value overrides (`data`, `epochs`, `imgsz`, `batch`, `device`...).

    Returns the ultralytics `YOLO` holding the trained model (its `trainer.best` is the checkpoint).  An
    in-memory model is first written to a temporary checkpoint, exactly what a user would load.
    """
    from ultralytics import YOLO

    if hasattr(model, "graph") and hasattr(model, "plan"):  # a pruning.Pruned
        model = model.model
    with tempfile.TemporaryDirectory(prefix="pruned-") as tmp:
        if isinstance(model, nn.Module):
            path = save_checkpoint(model, Path(tmp) / "pruned.pt", half=False)
        elif isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if path.suffix != ".pt":
                raise PruningError(f"finetune: {path} is not a .pt checkpoint; give the pruned weights "
                                   "(e.g. best-pruned.pt) or a pruning.Pruned")
            if not path.is_file():
                raise PruningError(f"finetune: {path}: no such checkpoint file; give the path of the pruned "
                                   "weights (Pruned.save or the pipeline's weights/ folder)")
        else:
            raise PruningError(f"finetune expects a checkpoint path or a pruned model, got {type(model).__name__}")
        yolo = YOLO(str(path))
        yolo.train(trainer=trainer_for(yolo.task), **overrides)
    return yolo

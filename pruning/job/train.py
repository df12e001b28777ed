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
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer

from ..checkpoint import save_checkpoint
from ..errors import PruningError


class PrunedModelMixin:
    """`get_model` hands back the (pruned) model it was given instead of building one from the yaml; mixed into
    each task's ultralytics trainer, in front of it."""

    def get_model(self, cfg: Any = None, weights: nn.Module | None = None, verbose: bool = True) -> nn.Module:
        if not isinstance(weights, nn.Module):
            raise PruningError(
                "a pruned-model trainer needs the pruned model as its weights: load the pruned checkpoint and "
                "train it, e.g. YOLO('pruned.pt').train(trainer=PrunedDetectionTrainer, ...), with pretrained "
                "left at True"
            )
        check_head_fits(weights.model[-1], self.data, self.args.data)
        model = self.set_model_names_for_load(weights) if hasattr(self, "set_model_names_for_load") else weights
        for p in model.parameters():
            p.requires_grad_(True)
        return model


def check_head_fits(head: nn.Module, data: dict[str, Any], name: Any) -> None:
    """A pruned head cannot be re-sized: its classes (a classifier's Linear outputs) and keypoints must be the
    data's, or ultralytics's trainer would replace it (classify) or fail mid-epoch."""
    classes = head.nc if hasattr(head, "nc") else head.linear.out_features
    if int(classes) != int(data["nc"]):
        raise PruningError(
            f"the pruned model predicts {classes} classes but the dataset {name} has {data['nc']}; "
            "a pruned head cannot be re-sized, fine-tune on data with the same classes"
        )
    if hasattr(head, "kpt_shape") and tuple(head.kpt_shape) != tuple(data.get("kpt_shape") or ()):
        raise PruningError(
            f"the pruned model predicts keypoints of shape {list(head.kpt_shape)} but the dataset {name} has "
            f"kpt_shape {data.get('kpt_shape')}; fine-tune on data with the model's keypoints"
        )


class PrunedDetectionTrainer(PrunedModelMixin, DetectionTrainer):
    """ultralytics DetectionTrainer that trains the pruned architecture it is given."""


class PrunedSegmentationTrainer(PrunedModelMixin, SegmentationTrainer):
    """ultralytics SegmentationTrainer that trains the pruned architecture it is given."""


class PrunedPoseTrainer(PrunedModelMixin, PoseTrainer):
    """ultralytics PoseTrainer that trains the pruned architecture it is given."""


class PrunedOBBTrainer(PrunedModelMixin, OBBTrainer):
    """ultralytics OBBTrainer that trains the pruned architecture it is given."""


class PrunedClassificationTrainer(PrunedModelMixin, ClassificationTrainer):
    """ultralytics ClassificationTrainer that trains the pruned architecture it is given."""


TRAINERS = {"detect": PrunedDetectionTrainer, "segment": PrunedSegmentationTrainer, "pose": PrunedPoseTrainer,
            "obb": PrunedOBBTrainer, "classify": PrunedClassificationTrainer}


def trainer_for(task: str) -> type:
    """The pruned-model trainer class of an ultralytics task (detect, segment, pose, obb, classify)."""
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

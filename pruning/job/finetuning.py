"""The job's runs of ultralytics's trainer: step 0 (a copy of `pretrained`, or trained from it or the yaml), each
pruned step's fine-tuning with the trainer that keeps its architecture, and the best checkpoint kept."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .train import finetune

if TYPE_CHECKING:
    from .config import Settings


def train_kwargs(settings: Settings, data: Path, out: Path, name: str, epochs: int) -> dict[str, Any]:
    return dict(data=str(data), epochs=epochs, imgsz=settings.imgsz, batch=settings.batch,
                device=settings.device, workers=settings.workers, seed=settings.seed,
                project=str(out.resolve()), name=name, exist_ok=True, plots=False, verbose=False, amp=False)


def initial_weights(settings: Settings, data: Path, out: Path, weights_dir: Path) -> Path:
    """Step 0 (`weights/step0.pt`): a copy of `pretrained` when `pretrain_epochs` is 0, else `pretrained` (or the
    `model` yaml) trained `pretrain_epochs` epochs."""
    target = weights_dir / "step0.pt"
    if not settings.trains_first:
        shutil.copyfile(settings.pretrained, target)  # read once; the run works on its own copy
        return target
    return train_to(str(settings.pretrained or settings.model), settings, data, out, settings.pretrain_epochs, target)


def train_to(source: str, settings: Settings, data: Path, out: Path, epochs: int, target: Path,
             name: str = "pretrain") -> Path:
    """Train `source` (weights or a model yaml) with ultralytics's own trainer; copy its best checkpoint to
    `target`.  (A pruned model is fine-tuned with `finetune_to`, whose trainer keeps the pruned architecture.)"""
    from ultralytics import YOLO

    yolo = YOLO(source)
    yolo.train(**train_kwargs(settings, data, out, name, epochs))
    return keep_best(yolo.trainer, target)


def finetune_to(weights: Path, settings: Settings, data: Path, out: Path, name: str, epochs: int,
                target: Path) -> Path:
    """Fine-tune a pruned checkpoint with the trainer that keeps its architecture; best checkpoint -> `target`."""
    yolo = finetune(str(weights), **train_kwargs(settings, data, out, name, epochs))
    return keep_best(yolo.trainer, target)


def keep_best(trainer: Any, target: Path) -> Path:
    """Copy a finished ultralytics trainer's best checkpoint (its last, if it saved no best) to `target`."""
    best = Path(trainer.best)
    shutil.copyfile(best if best.is_file() else trainer.last, target)
    return target

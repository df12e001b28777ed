"""`ExplainOptions`: what to explain and how, one validated record shared by `explain`, `Explainer.explain`, the
command line and the DetDSHAP pruning criterion (each used to repeat these knobs and their checks)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .composites import RulesSpec, resolve
from .errors import BaselineError, OptionsError
from .target import TARGETS

# The fields that choose the traced model (an Explainer is built for them); the others choose what one call explains.
MODEL_FIELDS = ("imgsz", "rules", "device", "dtype", "branch")


@dataclass(frozen=True, eq=False)
class ExplainOptions:
    """What to explain of a detector's output, and against which reference.

    target    "class": Σ over matched candidates of the probability of the box's class; "box": Σ of their x, y, w, h
              outputs (input pixels; OBB: and the angle); "all": both; "keypoints" (pose): their keypoint outputs;
              "mask" (segment): their mask logits summed inside the box (see `relprop.target`)
    iou       candidates with IoU ≥ iou with the box are matched (and the NMS IoU threshold when box is None)
    cls       explain this class, counting only candidates whose most probable class it is (default: the class of
              the most probable matched candidate; with box=None: keep only detections of this class); one class
              per box for several boxes
    conf, max_det  NMS settings, as ultralytics names them (box=None only)
    baseline  "black" (default), "blur", a constant in [0, 1], a tensor (3, h, w) / (K, 3, h, w) at the network input,
              or a list of K background images: the attribution is averaged over the K references, `batch` at a time
    imgsz     network input size (int or (h, w), multiples of 32); the image is letterboxed like ultralytics does
    rules     None / "deepshap" (default), "detdshap-paper", a dict {kind or node name or module-path pattern: Rule},
              or a `relprop.Composite`
    device, dtype  where and in which precision the model runs (default: the model's)
    branch    "one2many" (NMS) or "one2one" (end-to-end, top-k) for a head with both branches (YOLO26); default: the
              branch ultralytics's predict uses for the checkpoint
    keypoint  with target="keypoints" (pose): explain one keypoint's x, y (and visibility), by index or name

    imgsz, rules, device, dtype and branch choose the traced model (`relprop.explainer`); an `Explainer` refuses options that
    ask for another one.  Values are checked on construction (`OptionsError`, `BaselineError`, `RuleError`); `replace(**changes)` re-checks.
    """

    target: str = "class"
    iou: float = 0.7
    cls: int | tuple[int, ...] | None = None
    conf: float = 0.25
    max_det: int = 300
    baseline: Any = "black"
    batch: int = 4
    imgsz: int | tuple[int, int] | None = None
    rules: RulesSpec = None
    device: str | torch.device | None = None
    dtype: torch.dtype | None = None
    branch: str | None = None
    keypoint: int | str | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise OptionsError(f"target must be one of {', '.join(TARGETS)}; got {self.target!r}")
        _number("iou", self.iou, 0.0, 1.0, low_open=True)
        _number("conf", self.conf, 0.0, 1.0)
        _count("max_det", self.max_det)
        _count("batch", self.batch)
        object.__setattr__(self, "cls", _classes(self.cls))
        _check_baseline(self.baseline)
        if self.imgsz is not None:
            object.__setattr__(self, "imgsz", _imgsz(self.imgsz))
        if self.rules is not None:
            resolve(self.rules)  # RuleError for an unknown preset or a value that is not a Rule
        if self.dtype is not None and not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise OptionsError(f"dtype must be a torch.dtype such as torch.float64; got {self.dtype!r}")
        if self.keypoint is not None and (isinstance(self.keypoint, bool) or not isinstance(
                self.keypoint, (int, np.integer, str)) or (not isinstance(self.keypoint, str) and self.keypoint < 0)):
            raise OptionsError(f"keypoint must be a keypoint index >= 0 or a keypoint name; got {self.keypoint!r}")
        if self.branch is not None and self.branch not in ("one2many", "one2one"):
            raise OptionsError(f"branch must be 'one2many', 'one2one' or None; got {self.branch!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise OptionsError(f"device {self.device!r} is not a torch device ({exc}); use 'cpu' or 'cuda'") from None
            if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
                raise OptionsError(f"device {self.device!r}: no CUDA GPU is available here; use device='cpu'")

    @classmethod
    def of(klass, options: "ExplainOptions | None" = None, **changes: Any) -> "ExplainOptions":
        """`options` (default: the defaults) with keyword `changes`; TypeError names an unknown keyword.
        (`klass`, not `cls`: `cls` is an option.)"""
        names = {f.name for f in fields(klass)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown explain option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        if options is None:
            return klass(**changes)
        if not isinstance(options, klass):
            raise OptionsError(f"options must be a relprop.ExplainOptions; got {type(options).__name__}")
        return options.replace(**changes) if changes else options

    def replace(self, **changes: Any) -> "ExplainOptions":
        """A copy with `changes`, checked again."""
        return dataclasses.replace(self, **changes)

    def describe_baseline(self, k: int) -> str:
        """The reference in words (recorded in each Explanation), for K reference inputs."""
        b = self.baseline
        if b is None or isinstance(b, str):
            return b or "black"
        if isinstance(b, (int, float)):
            return f"constant {b}"
        return f"{k} reference(s)"


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        raise OptionsError(f"{name} must be a number in {'(' if low_open else '['}{low:g}, {high:g}]; got {value!r}")


def _count(name: str, value: Any) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise OptionsError(f"{name} must be a positive integer; got {value!r}")


def _classes(cls: Any) -> int | tuple[int, ...] | None:
    """None, one class index, or one per box (a tuple)."""
    if isinstance(cls, (np.ndarray, torch.Tensor)):
        cls = cls.tolist()
    if cls is None:
        return None
    if isinstance(cls, (list, tuple)):
        return tuple(_class(c, cls) for c in cls)
    return _class(cls, cls)


def _class(c: Any, given: Any) -> int:
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 0:
        raise OptionsError(f"cls must be a class index >= 0 or a list of them (one per box); got {given!r}")
    return int(c)


def _imgsz(imgsz: Any) -> int | tuple[int, int]:
    """A positive int, or (h, w) of positive ints; (n,) is n."""
    values = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    if not 1 <= len(values) <= 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                        for v in values):
        raise OptionsError(f"imgsz must be a positive int or (h, w); got {imgsz!r}")
    return int(values[0]) if len(values) == 1 else (int(values[0]), int(values[1]))


def _check_baseline(baseline: Any) -> None:
    """The kind and range of a reference; images and tensor shapes are checked when the references are made."""
    if baseline is None or isinstance(baseline, torch.Tensor):
        return
    if isinstance(baseline, str):
        if baseline in ("black", "blur"):
            return
        try:
            value = float(baseline)
        except ValueError:
            raise BaselineError(f"unknown baseline {baseline!r}; use 'black', 'blur', a number in [0, 1], a tensor or "
                               "a list of background images") from None
        return _check_baseline(value)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not 0.0 <= float(baseline) <= 1.0:
            raise BaselineError(f"a constant baseline must be in [0, 1] (input scale); got {baseline}")
        return
    if isinstance(baseline, (list, tuple)):
        if not baseline:
            raise BaselineError("an empty list of background images")
        return
    if isinstance(baseline, (Path, np.ndarray)):
        raise BaselineError("background images are given as a list (K images), even for one")
    raise BaselineError(f"cannot make a baseline from {type(baseline).__name__}")

"""The job's settings: `default.yaml` plus `key=value` overrides, loaded into one typed `Settings`, checked before
anything is written.

Choices come from the registries that define them (criteria, DetDSHAP targets, scopes, metrics, exports), so a
new criterion is a new choice without editing this file.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ..api import TARGET_METRICS
from ..criteria import DetDSHAP, criterion_names
from ..depth_plan import PRUNE_DEPTH
from ..devices import torch_device
from ..errors import PruningError
from ..latency import RUNTIMES
from ..policy import SCOPES
from .trees import TREES

DEFAULT_CFG = Path(__file__).resolve().parents[2] / "default.yaml"
EXPORTS = ("onnx", "none")
CALIB_BOXES = ("labels", "detections")


class ConfigError(PruningError):
    """A settings file or override is malformed; names the file or key."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the pruning job.  default.yaml holds each one's default and documents it (the one source of
    defaults: fields have none here); build with `load_config`, which validates."""

    pretrained: str | None
    model: str
    data: str | None
    imgsz: int
    batch: int
    device: Any
    workers: int
    seed: int
    pretrain_epochs: int
    criterion: str
    scope: str
    step_ratio: float
    prune_threshold: float | None
    target: float
    target_metric: str
    max_map_drop: float
    max_steps: int
    min_channels: int
    round_to: int
    epochs_per_step: int
    final_epochs: int
    calib_images: int
    calib_boxes: str
    calib_target: str
    calib_batch: int
    calib_chunk: int
    iou: float
    baseline: Any
    hsic_lambda: float
    project: str
    name: str
    resume: bool
    export: str
    latency_imgsz: int
    latency_runtime: str
    latency_threads: int
    latency_warmup: int
    latency_repeats: int
    compare_criteria: list[str]
    compare_targets: list[float]
    compare_metric: str
    compare_scope: str
    compare_epochs: int
    compare_seeds: list[int]
    prune_depth: str = "never"  # never | auto | only: also remove residual blocks (pruning.depth_plan)
    compare_depth: list[str] = dataclasses.field(default_factory=lambda: ["never"])  # compare rows: width/both/depth

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (what report.json and state.json record)."""
        return dataclasses.asdict(self)

    @property
    def trains_first(self) -> bool:
        """Whether step 0 is trained (`pretrain_epochs` > 0, or no `pretrained` weights) rather than copied."""
        return self.pretrained is None or self.pretrain_epochs > 0

    def replace(self, **changes: Any) -> "Settings":
        """A validated copy with `changes` applied (unknown keys raise ConfigError)."""
        return load_config(None, {**self.to_dict(), **changes}, base=None)


KEYS = tuple(f.name for f in dataclasses.fields(Settings))


def choices() -> dict[str, tuple[str, ...]]:
    """Setting -> its allowed values, each from the registry that defines them."""
    crit = criterion_names()
    return {"criterion": crit, "scope": SCOPES, "compare_scope": SCOPES, "target_metric": TARGET_METRICS,
            "compare_metric": TARGET_METRICS, "calib_boxes": CALIB_BOXES, "calib_target": tuple(DetDSHAP.TARGETS),
            "export": EXPORTS, "latency_runtime": RUNTIMES, "prune_depth": PRUNE_DEPTH}


FRACTIONS = ("step_ratio", "target", "max_map_drop")
COUNTS = ("imgsz", "batch", "pretrain_epochs", "epochs_per_step", "final_epochs", "calib_images", "max_steps",
          "min_channels", "round_to", "workers", "seed", "compare_epochs", "latency_imgsz", "latency_threads",
          "latency_warmup", "latency_repeats", "calib_batch", "calib_chunk")
POSITIVE = ("imgsz", "batch", "round_to", "min_channels", "calib_images", "latency_imgsz", "latency_threads",
            "latency_repeats", "calib_batch", "calib_chunk")


def parse_value(text: str) -> Any:
    """Parse an override's value the way ultralytics does: YAML scalars (1, 0.5, true, null, [1, 2])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(cfg: str | Path | Mapping[str, Any] | None = None,
                overrides: list[str] | Mapping[str, Any] | None = None, *, base: Path | None = DEFAULT_CFG
                ) -> Settings:
    """Read `base` (the repository's default.yaml), then `cfg` (a yaml path or a dict), apply overrides
    (`key=value` strings or a dict), validate, return the Settings.  Raises ConfigError naming the key or file."""
    settings: dict[str, Any] = {}
    if base is not None:
        settings.update(_known(_read(base), base.name))
    if isinstance(cfg, Mapping):
        settings.update(_known(dict(cfg), "cfg"))
    elif cfg is not None and (base is None or Path(cfg).resolve() != base):
        settings.update(_known(_read(Path(cfg)), str(cfg)))
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = []
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not key=value")
            key, _, value = item.partition("=")
            pairs.append((key.strip(), parse_value(value)))
    settings.update(_known(dict(pairs), "override"))
    missing = [k for k in KEYS if k not in settings]
    if missing:
        raise ConfigError(f"{base or 'cfg'}: missing setting(s) {', '.join(missing)}")
    validate(settings)
    return Settings(**settings)


def _known(values: dict[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown setting {', '.join(map(repr, unknown))}; valid keys are those of "
                          f"{DEFAULT_CFG.name}")
    return values


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such settings file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(s: dict[str, Any]) -> None:
    """Raise ConfigError naming the first setting whose value is out of range or of the wrong type."""
    for key, allowed in choices().items():
        if s[key] not in allowed:
            raise ConfigError(f"{key}={s[key]!r} is not one of {', '.join(allowed)}")
    for key in FRACTIONS:
        if not _is_number(s[key]) or not 0 <= s[key] < 1:
            raise ConfigError(f"{key}={s[key]!r} must be a number in [0, 1)")
    if not s["step_ratio"] > 0:
        raise ConfigError("step_ratio must be > 0")
    t = s["prune_threshold"]
    if t is not None and (not _is_number(t) or t != t or abs(t) == float("inf")):
        raise ConfigError(f"prune_threshold={t!r} must be null or a finite number")
    for key in COUNTS:
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 0:
            raise ConfigError(f"{key}={s[key]!r} must be a non-negative integer")
    for key in POSITIVE:
        if s[key] == 0:
            raise ConfigError(f"{key} must be positive")
    if not _is_number(s["iou"]) or not 0 < s["iou"] <= 1:  # relprop matches boxes at IoU >= iou: 0 matches all
        raise ConfigError(f"iou={s['iou']!r} must be a number in (0, 1]")
    if not _is_number(s["hsic_lambda"]) or s["hsic_lambda"] < 0:
        raise ConfigError(f"hsic_lambda={s['hsic_lambda']!r} must be a number >= 0")
    b = s["baseline"]
    if b not in ("black", "blur") and not (_is_number(b) and 0 <= b <= 1):
        raise ConfigError(f"baseline={b!r} must be black, blur or a constant grey in [0, 1] (0 is black)")
    check_device(s["device"])
    if not isinstance(s["resume"], bool):
        raise ConfigError(f"resume={s['resume']!r} must be true or false")
    crit = criterion_names()
    listed = s["compare_criteria"]
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"compare_criteria={listed!r} must be a non-empty list of criteria, e.g. "
                          f"compare_criteria=[{listed if listed in crit else crit[0]}] (choices: {', '.join(crit)})")
    bad = [c for c in listed if c not in crit]
    if bad or len(set(listed)) != len(listed):
        raise ConfigError(f"compare_criteria={listed!r}: " + (f"{', '.join(map(repr, bad))} not among {', '.join(crit)}"
                          if bad else "a criterion is listed twice"))
    modes = s["compare_depth"]
    if (not isinstance(modes, list) or not modes or len(set(map(str, modes))) != len(modes)
            or not all(m in PRUNE_DEPTH for m in modes)):
        raise ConfigError(f"compare_depth={modes!r} must be a non-empty list of distinct values among "
                          f"{', '.join(PRUNE_DEPTH)} (never: width rows, auto: both, only: depth rows), "
                          f"e.g. [never, auto, only]")
    targets = s["compare_targets"]
    if not isinstance(targets, list) or not targets or not all(_is_number(t) and 0 < t < 1 for t in targets):
        raise ConfigError(f"compare_targets={targets!r} must be a non-empty list of fractions in (0, 1)")
    seeds = s["compare_seeds"]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds)):
        raise ConfigError(f"compare_seeds={seeds!r} must be a non-empty list of distinct integers >= 0, "
                          f"e.g. [0, 1, 2]")
    if s["pretrained"] is None and s["pretrain_epochs"] == 0:
        raise ConfigError("with pretrained=null the model is trained from its yaml: pretrain_epochs must be > 0")
    if s["pretrained"] is not None and not Path(str(s["pretrained"])).is_file():
        raise ConfigError(f"pretrained={s['pretrained']}: no such weights file")
    if s["data"] is not None and s["data"] != TREES and not Path(str(s["data"])).exists():
        raise ConfigError(f"data={s['data']}: no such dataset yaml or classification folder (or `trees`, the tiled "
                          f"deepforest images)")
    if s["export"] == "onnx":
        check_export_available()


def check_device(device: Any) -> None:
    """The `device` setting names a device this machine has (a GPU index beyond the count, or cuda without one,
    would otherwise fail inside torch or ultralytics after the run directory exists)."""
    try:
        dev = torch_device(device)
    except PruningError as exc:
        raise ConfigError(f"device={device!r}: {exc}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device={device!r}: no CUDA GPU is available here; use device=cpu")
        if (dev.index or 0) >= count:
            raise ConfigError(f"device={device!r}: GPU {dev.index} does not exist (this machine has {count}: "
                              f"0..{count - 1})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r}: Apple's MPS is not available here; use device=cpu")


def check_export_available() -> None:
    """export=onnx needs the onnx package; say so now, not after an hour of training."""
    try:
        importlib.import_module("onnx")
    except ImportError as exc:
        raise ConfigError("export=onnx needs the onnx package, which is not importable "
                          f"({exc}): pip install 'onnx>=1.15,<2' (a dependency of this project), or set "
                          "export=none") from None

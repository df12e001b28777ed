"""The pipeline's settings: `default.yaml` plus `key=value` overrides, checked before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import PruningError

DEFAULT_CFG = Path(__file__).resolve().parents[2] / "default.yaml"

CHOICES = {
    "criterion": ("detdshap", "hsic", "l1", "l2", "taylor", "random"),
    "scope": ("backbone", "all"),
    "compare_scope": ("backbone", "all"),
    "target_metric": ("params", "gflops"),
    "compare_metric": ("params", "gflops"),
    "calib_boxes": ("labels", "detections"),
    "calib_target": ("class", "box", "all"),
    "export": ("onnx", "none"),
}
FRACTIONS = ("step_ratio", "target", "max_map_drop")


class ConfigError(PruningError):
    """A settings file or override is malformed; names the file or key."""


def parse_value(text: str) -> Any:
    """Parse an override's value the way ultralytics does: YAML scalars (1, 0.5, true, null, [1, 2])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(cfg: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> dict[str, Any]:
    """Read `cfg` (default: the repository's default.yaml), apply overrides, validate, return the settings."""
    defaults = _read(DEFAULT_CFG)
    settings = dict(defaults)
    if cfg is not None and Path(cfg).resolve() != DEFAULT_CFG:
        user = _read(Path(cfg))
        unknown = sorted(set(user) - set(defaults))
        if unknown:
            raise ConfigError(f"{cfg}: unknown key(s) {', '.join(unknown)}; valid keys are those of {DEFAULT_CFG.name}")
        settings.update(user)
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = []
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not key=value")
            key, _, value = item.partition("=")
            pairs.append((key.strip(), parse_value(value)))
    for key, value in pairs:
        if key not in defaults:
            raise ConfigError(f"unknown setting '{key}'; valid keys are those of {DEFAULT_CFG.name}")
        settings[key] = value
    validate(settings)
    return settings


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


def validate(s: dict[str, Any]) -> None:
    """Raise ConfigError naming the first setting whose value is out of range or of the wrong type."""
    for key, choices in CHOICES.items():
        if s[key] not in choices:
            raise ConfigError(f"{key}={s[key]!r} is not one of {', '.join(choices)}")
    for key in FRACTIONS:
        if not isinstance(s[key], (int, float)) or not 0 <= s[key] < 1:
            raise ConfigError(f"{key}={s[key]!r} must be a number in [0, 1)")
    if not s["step_ratio"] > 0:
        raise ConfigError("step_ratio must be > 0")
    t = s["prune_threshold"]
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or t != t or abs(t) == float("inf")):
        raise ConfigError(f"prune_threshold={t!r} must be null or a finite number")
    for key in ("imgsz", "batch", "pretrain_epochs", "epochs_per_step", "final_epochs", "calib_images", "max_steps",
                "min_channels", "round_to", "workers", "seed", "compare_epochs"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 0:
            raise ConfigError(f"{key}={s[key]!r} must be a non-negative integer")
    for key in ("imgsz", "batch", "round_to", "min_channels", "calib_images"):
        if s[key] == 0:
            raise ConfigError(f"{key} must be positive")
    bad = [c for c in s["compare_criteria"] if c not in CHOICES["criterion"]] if isinstance(s["compare_criteria"], list) else [s["compare_criteria"]]
    if bad:
        raise ConfigError(f"compare_criteria: {bad} not among {', '.join(CHOICES['criterion'])}")
    targets = s["compare_targets"]
    if not isinstance(targets, list) or not targets or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in targets):
        raise ConfigError(f"compare_targets={targets!r} must be a non-empty list of fractions in (0, 1)")
    if s["pretrained"] is None and s["pretrain_epochs"] == 0:
        raise ConfigError("with pretrained=null the model is trained from its yaml: pretrain_epochs must be > 0")
    if s["pretrained"] is not None and not Path(str(s["pretrained"])).is_file():
        raise ConfigError(f"pretrained={s['pretrained']}: no such weights file")
    if s["data"] is not None and not Path(str(s["data"])).is_file():
        raise ConfigError(f"data={s['data']}: no such dataset yaml")

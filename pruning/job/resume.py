"""What `resume=true` may continue: the run's `state.json`, and only with the settings the run was started with.

A resumed run that took other settings would mix criteria, ratios or data across its steps while `report.md` and
`state.json` disagree, so every setting must equal the stored one except those in `MAY_CHANGE`, which choose where
and how fast the work runs, not what it computes.  A finished run is held to the same rule: new settings are
refused, not ignored.  A setting the stored ones lack (one added to the job since the run began) is taken as
given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import PruningError
from .config import Settings

MAY_CHANGE = ("resume", "device", "workers", "calib_batch", "calib_chunk")  # where and how fast, not what


class ResumeError(PruningError):
    """`resume=true` cannot continue this run as asked (no state, or settings that differ from the stored ones)."""


def read_state(out: Path) -> dict[str, Any]:
    """The run's state.json (written atomically by the job), or ResumeError naming the file."""
    path = out / "state.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResumeError(f"resume: {out} has no state.json to continue from") from None
    except (OSError, ValueError) as exc:
        raise ResumeError(f"resume: {path} cannot be read ({exc}); start a new run without resume=true") from None
    if not isinstance(state, dict) or not isinstance(state.get("settings"), dict):
        raise ResumeError(f"resume: {path} records no settings; start a new run without resume=true")
    return state


def check_same_settings(stored: dict[str, Any], settings: Settings, out: Path,
                        may_change: tuple[str, ...] = MAY_CHANGE) -> list[str]:
    """Raise ResumeError naming every setting that differs from the run's stored ones (those of `may_change`
    aside); returns the allowed changes in words ('device: cpu -> 0') for the log."""
    given = settings.to_dict()
    differ = [k for k in given if k in stored and k not in may_change and _norm(stored[k]) != _norm(given[k])]
    if differ:
        was = ", ".join(f"{k}={stored[k]!r}" for k in differ)
        now = ", ".join(f"{k}={given[k]!r}" for k in differ)
        raise ResumeError(f"resume: {out} was started with {was}; this call gives {now}. A run continues with the "
                          f"settings it started with: give those (only {', '.join(may_change)} may change), or "
                          f"start a new run without resume=true")
    return [f"{k}: {stored[k]!r} -> {given[k]!r}" for k in may_change
            if k != "resume" and k in stored and _norm(stored[k]) != _norm(given[k])]


def _norm(value: Any) -> Any:
    """A setting as state.json stores it (JSON turns tuples into lists)."""
    return json.loads(json.dumps(value, default=str))

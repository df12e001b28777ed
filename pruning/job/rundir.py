"""The run directory: where a run's files go (`project/name`, numbered like ultralytics), its state.json, paths
relative to it in reports, and the job's log line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fxgraph.outputs import write_text

from ..errors import OutputError, PruningError

if TYPE_CHECKING:
    from .config import Settings


def run_dir(settings: Settings) -> Path:
    """`project/name`, or `name2`, `name3`... like ultralytics; with resume, the existing `project/name`."""
    base = Path(settings.project) / str(settings.name)
    if settings.resume:
        if not (base / "state.json").is_file():
            raise PruningError(f"resume: {base} has no state.json to continue from")
        return base
    from ultralytics.utils.files import increment_path

    path = increment_path(base, sep="")  # exp, exp2, exp3 ... as ultralytics numbers its runs
    path.mkdir(parents=True)
    return path


def relative_to(path: str | Path, root: Path) -> str:
    """`path` relative to `root` when inside it (reports do not record one machine's absolute paths)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def save_state(out: Path, state: dict[str, Any]) -> None:
    """Write state.json atomically: an interruption leaves the previous state intact."""
    write_text(out / "state.json", json.dumps(state, indent=2, default=str), error=OutputError)


def log(message: str) -> None:
    """One line of the job's own output, through ultralytics's logger (rank 0 only under torchrun)."""
    from ultralytics.utils import LOGGER

    LOGGER.info(f"pruning: {message}")

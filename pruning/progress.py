"""Progress bars for the long loops of pruning (calibration scoring, compare rows, latency bisection).

Drawn with ultralytics's own TQDM (a bar with the rate, elapsed time and ETA), as its training loops are; silent
when the output is not a terminal or a notebook (logs, CI, pipes), so redirected output holds no bar lines.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """True when a person is watching: stdout is a terminal, or a Jupyter kernel is running this."""
    stream = sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def progress(items: Iterable[T], desc: str, total: int | None = None, quiet: bool = False) -> Iterator[T]:
    """Iterate `items` under a progress bar labelled `desc` (none when `quiet` or not `interactive()`)."""
    from ultralytics.utils import TQDM

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if quiet or not interactive():
        yield from items
        return
    yield from TQDM(items, desc=desc, total=total, disable=False)


def ticker(desc: str, total: int, enabled: bool = True) -> Callable[[], None]:
    """A bar advanced by calling the returned function once per step of a loop that is not a plain iteration (a
    bisection); it closes itself after `total` steps.  A no-op when not `enabled` or not `interactive()`."""
    if not enabled or total <= 0 or not interactive():
        return lambda: None
    from ultralytics.utils import TQDM

    bar = TQDM(total=total, desc=desc, disable=False)

    def tick() -> None:
        if not bar.closed:
            bar.update(1)
            if bar.n >= total:
                bar.close()

    return tick


def bisection_steps(width: float, resolution: float) -> int:
    """How many halvings bring an interval of `width` to `resolution` or less (the bisection's step count)."""
    return max(0, math.ceil(math.log2(width / resolution))) if width > resolution > 0 else 0

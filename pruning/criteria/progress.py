"""Progress bars for the long loops (scoring, the compare sweep), drawn with ultralytics's own TQDM.

Only rank 0 of a torchrun job draws, so N processes do not print N interleaved bars.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from .distributed import rank_world

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items` under a progress bar labelled `desc` (silent on ranks other than 0)."""
    from ultralytics.utils import TQDM

    quiet = rank_world()[0] != 0
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    yield from TQDM(items, desc=desc, total=total, disable=quiet)

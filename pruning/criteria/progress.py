"""Progress bars for the long loops (scoring, the compare sweep), drawn with ultralytics's own TQDM (with ETA) by
`pruning.progress`, silent when the output is not a terminal or a notebook.

Only rank 0 of a torchrun job draws, so N processes do not print N interleaved bars.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from ..progress import progress as bar
from .distributed import rank_world

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items` under a progress bar labelled `desc` (silent on ranks other than 0)."""
    yield from bar(items, desc, total, quiet=rank_world()[0] != 0)  # silent off a terminal too

"""Notebook rendering: an `Explanation` as its figure, and a list of them as a grid (`relprop.show`).

Both draw through `Explanation.save_png`, so a notebook shows exactly the figure `relprop explain` writes.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import RelpropError

if TYPE_CHECKING:
    from .explanation import Explanation


def png_bytes(explanation: "Explanation", **kwargs) -> bytes:
    """The figure of `explanation.save_png(**kwargs)` as PNG bytes (drawn into a temporary file, then read)."""
    with tempfile.TemporaryDirectory(prefix="relprop-png-") as tmp:
        return explanation.save_png(Path(tmp) / "figure.png", **kwargs).read_bytes()


class ExplanationGrid:
    """Several explanations side by side, `cols` per row; a notebook renders it as one PNG (`_repr_png_`)."""

    def __init__(self, explanations: Sequence["Explanation"], cols: int = 2, **kwargs) -> None:
        explanations = list(explanations)
        if not explanations:
            raise RelpropError("relprop.show: no explanations to show (the list is empty); explain a box first")
        if not isinstance(cols, int) or isinstance(cols, bool) or cols < 1:
            raise RelpropError(f"relprop.show: cols={cols!r} must be a positive int")
        self.explanations = explanations
        self.cols = min(cols, len(explanations))
        self.kwargs = kwargs

    def __len__(self) -> int:
        return len(self.explanations)

    def __repr__(self) -> str:
        return f"ExplanationGrid({len(self)} explanations, cols={self.cols})"

    def image(self) -> np.ndarray:
        """The grid as an (H, W, 4) float RGBA array: each figure in its cell, top-left aligned, white around."""
        from matplotlib import image as mpimg

        tiles = [mpimg.imread(io.BytesIO(png_bytes(e, **self.kwargs)), format="png") for e in self.explanations]
        tiles = [np.dstack([t, np.ones(t.shape[:2], t.dtype)]) if t.shape[2] == 3 else t for t in tiles]
        cell_h = max(t.shape[0] for t in tiles)
        cell_w = max(t.shape[1] for t in tiles)
        rows = -(-len(tiles) // self.cols)
        grid = np.ones((rows * cell_h, self.cols * cell_w, 4), dtype=np.float32)
        for i, t in enumerate(tiles):
            r, c = divmod(i, self.cols)
            grid[r * cell_h:r * cell_h + t.shape[0], c * cell_w:c * cell_w + t.shape[1]] = t
        return grid

    def _repr_png_(self) -> bytes:
        from matplotlib import pyplot as plt

        buf = io.BytesIO()
        plt.imsave(buf, self.image(), format="png")
        return buf.getvalue()

    def save_png(self, path: str | Path) -> Path:
        """Write the grid to `path` (its folder is created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._repr_png_())
        return path


def show(explanations: "Explanation | Sequence[Explanation]", cols: int = 2, **kwargs) -> ExplanationGrid:
    """A grid of explanations for a notebook: `relprop.show(relprop.explain(model, "bus.jpg"))`.

    `kwargs` go to `Explanation.save_png` (alpha, dpi, percentile).  A single explanation is a grid of one."""
    from .explanation import Explanation

    if isinstance(explanations, Explanation):
        explanations = [explanations]
    return ExplanationGrid(explanations, cols=cols, **kwargs)

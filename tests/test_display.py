"""Notebook rendering: an Explanation shows as its figure (`_repr_png_`), a list as a grid (`relprop.show`)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

import relprop
from relprop.display import ExplanationGrid, png_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def explanation(h: int = 100, w: int = 100, index: int = 0, seed: int = 0) -> relprop.Explanation:
    """A small explanation with a random heatmap over a random image (no model needed to draw it)."""
    rng = np.random.default_rng(seed)
    heat = rng.normal(size=(h, w))
    return relprop.Explanation(
        heatmap=heat, input_relevance=torch.zeros(3, h, w), channels={"model.0.conv": rng.normal(size=8)},
        score=1.0, reference_score=0.25, delta=1e-7, box=np.array([10.0, 20.0, 60.0, 80.0]),
        box_input=np.array([10.0, 20.0, 60.0, 80.0]), cls=0, name="person", target="class",
        candidates=np.array([3]), ious=np.array([0.9]), conf=0.8, index=index,
        image=rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature and the chunk's name."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_repr_png_is_a_png_of_the_figure_size(tmp_path):
    ex = explanation(100, 100)
    data = ex._repr_png_()
    # save_png's figure: (6 + 1.2) x 6 inches at 110 dpi for a square image
    assert png_size(data) == (792, 660)
    assert png_size(ex.save_png(tmp_path / "a.png").read_bytes()) == png_size(data)
    from matplotlib import image as mpimg
    import io
    pixels = mpimg.imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (660, 792) and pixels.std() > 0.05  # decodes, and is not blank
    wide, tall = png_size(explanation(50, 150)._repr_png_()), png_size(explanation(150, 50)._repr_png_())
    assert wide[0] > wide[1] and tall[1] > tall[0]


def test_a_list_renders_as_a_grid_of_figures():
    exs = [explanation(index=i, seed=i) for i in range(3)]
    grid = relprop.show(exs, cols=2)
    assert isinstance(grid, ExplanationGrid) and len(grid) == 3
    w, h = png_size(png_bytes(exs[0]))
    assert png_size(grid._repr_png_()) == (2 * w, 2 * h)  # 2 columns, 2 rows
    image = grid.image()
    assert np.all(image[h:, w:, :3] == 1.0)  # the fourth cell is empty (white)
    assert image[:h, w:, :3].std() > 0.05  # the second figure is drawn in the first row
    assert png_size(relprop.show(exs[0])._repr_png_()) == (w, h)  # one explanation: a grid of one
    assert png_size(relprop.show(exs, cols=5)._repr_png_()) == (3 * w, h)  # never more columns than figures


def test_show_refuses_an_empty_list_and_bad_columns():
    with pytest.raises(relprop.RelpropError, match="no explanations to show"):
        relprop.show([])
    with pytest.raises(relprop.RelpropError, match="cols=0 must be a positive int"):
        relprop.show([explanation()], cols=0)


def test_pruned_and_its_report_render_as_a_small_table():
    import re
    from pathlib import Path

    from pruning.api import Pruned, Report
    from pruning.plans import Plan

    report = Report(params_before=3_000_000, params_after=2_250_000, gflops_before=8.0, gflops_after=6.0,
                    units_removed=123, imgsz=(640, 640))
    table = report._repr_html_()
    cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", table)
    assert cells == ["", "before", "after", "kept", "parameters", "3,000,000", "2,250,000", "75.0%",
                     "GFLOPs@640x640", "8.000", "6.000", "75.0%"]
    assert "123 channel units removed" in table
    plan = Plan(remove={"a": (1, 2), "b": (), "c": (0,)}, settings={"criterion": "l1", "ratio": 0.25})
    pruned = Pruned(graph=None, plan=plan, report=report, source=Path("/x/best.pt"))
    html = pruned._repr_html_()
    assert "pruned from best.pt (criterion=l1, ratio=0.25), 2 groups cut" in html
    assert re.findall(r"<td[^>]*>(.*?)</td>", html) == re.findall(r"<td[^>]*>(.*?)</td>", table)

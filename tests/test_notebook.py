"""The tutorial notebook runs top to bottom (a cell that raises fails); needs nbclient and ipykernel (docs extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "explain_and_prune.ipynb"


@pytest.mark.skipif(importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("ipykernel") is None,
                    reason="nbclient/ipykernel are not installed (pip install -e '.[docs]')")
def test_the_tutorial_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "data" in o and "image/png" in o["data"]]
    assert len(images) >= 2  # the explanation and the grid, inline
    text = "".join(o.get("text", "") for o in outputs)
    assert "delta = " in text and "speed-up (min)" in text

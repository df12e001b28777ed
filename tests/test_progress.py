"""Progress bars (pruning.progress): a bar with ETA on a terminal or in a notebook, nothing in logs and pipes."""

from __future__ import annotations

import pytest

import pruning.progress as progress_mod
from pruning.progress import bisection_steps, progress, ticker


def test_silent_when_not_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "interactive", lambda: False)
    assert list(progress(range(5), "scoring")) == list(range(5))
    ticker("latency bisection", 3)()
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_a_bar_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "interactive", lambda: True)
    assert list(progress(range(3), "detdshap scoring")) == [0, 1, 2]
    text = capsys.readouterr().out
    assert "detdshap scoring" in text and "3/3" in text and "100%" in text
    assert list(progress(range(3), "quiet rank", quiet=True)) == [0, 1, 2]
    assert "quiet rank" not in capsys.readouterr().out
    tick = ticker("latency bisection", 2)
    tick()
    tick()
    tick()  # one more than planned: ignored, the bar is closed
    text = capsys.readouterr().out
    assert "latency bisection" in text and "2/2" in text


@pytest.mark.parametrize("width,resolution", [(0.99, 1e-3), (0.99, 0.03), (0.5, 0.02), (0.99, 0.99), (1.0, 0.25)])
def test_bisection_steps_counts_the_halvings(width, resolution):
    lo, hi, n = 0.0, width, 0
    while hi - lo > resolution:  # as plan_for_target bisects (either half)
        lo = (lo + hi) / 2 if n % 2 else lo
        hi = hi if n % 2 else (lo + hi) / 2
        n += 1
    assert bisection_steps(width, resolution) == n

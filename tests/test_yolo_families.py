"""YOLO11, YOLO26 (both head branches), YOLOv5u and YOLOv9: traces equal ultralytics, facts recorded, unsupported
families refused, the MatMul rule against its closed form, attention-block and per-family completeness."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import fxgraph  # noqa: E402
import relprop  # noqa: E402
from conftest import cached_model  # noqa: E402
from conftest import completeness_ok, random_model  # noqa: E402

D = torch.float64


def max_diff(a, b) -> float:
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("name, branch, family, box_format", [
    ("yolo11n.yaml", None, "yolo11", "xywh"),
    ("yolo11n-seg.yaml", None, "yolo11", "xywh"),
    ("yolo26n.yaml", "one2many", "yolo26", "xywh"),
    ("yolo26n.yaml", "one2one", "yolo26", "xyxy"),
    ("yolo26n-seg.yaml", "one2one", "yolo26", "xyxy"),
    ("yolov5nu.yaml", None, "yolov5", "xywh"),
    ("yolov9t.yaml", None, "yolov9", "xywh"),
])
def test_trace_equals_ultralytics(name, branch, family, box_format):
    model = cached_model(name)
    g = fxgraph.trace(model, (64, 96), dtype=D, branch=branch)
    x = torch.rand(2, 3, 64, 96, dtype=D)
    assert max_diff(fxgraph.reference_outputs(g.model, x, branch), g(x)) <= 1e-10
    facts = g.facts
    assert (facts.family, facts.box_format) == (family, box_format)
    assert facts.branch == (branch if "yolo26" in name else None)
    assert facts.pred_layout == ("B,4+nc+nm,A" if "seg" in name else "B,4+nc,A")


def test_trace_float32_second_size_and_default_branch():
    g = fxgraph.trace(cached_model("yolo26n.yaml"), 32)
    assert g.facts.branch == "one2many"  # what ultralytics predict uses for this (non-end2end) checkpoint
    x = torch.rand(1, 3, 32, 32)
    assert max_diff(fxgraph.reference_outputs(g.model, x), g(x)) <= 1e-4
    assert sum(1 for _ in g.nodes("matmul")) == 4


def test_branch_errors():
    with pytest.raises(fxgraph.UnsupportedModelError, match="branch='both'"):
        fxgraph.trace(cached_model("yolo26n.yaml"), 32, branch="both")
    with pytest.raises(fxgraph.UnsupportedModelError, match="no one2one"):
        fxgraph.trace(cached_model("yolo11n.yaml"), 32, branch="one2one")


@pytest.mark.parametrize("name, match", [
    ("yolov10n.yaml", "v10Detect"), ("yolo11n-pose.yaml", "Pose"), ("yolo11n-obb.yaml", "OBB"),
    ("yolo11n-cls.yaml", "Classify"),
])
def test_unsupported_families_are_refused(name, match):
    with pytest.raises(fxgraph.UnsupportedModelError, match=match):
        fxgraph.check_supported(fxgraph.load_ultralytics(name))


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


IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)


@pytest.mark.parametrize("name, branch", [("yolo11n.yaml", None), ("yolo26n.yaml", "one2many"),
                                          ("yolo26n.yaml", "one2one")])
def test_completeness_random_weights_float64(name, branch):
    model = random_model(name)
    head = model.model[-1]
    if head.reg_max == 1:  # raw ltrb distances: random weights give boxes with x2 < x1, which no box can match
        with torch.no_grad():
            for convs in (*head.cv2, *getattr(head, "one2one_cv2", ())):
                convs[-1].weight.mul_(0.01)
                convs[-1].bias.fill_(0.5)
    ex = relprop.Explainer(model, 64, dtype=D, branch=branch)
    found = ex.explain(IMAGE, conf=0.0, max_det=3, target="all")
    assert len(found) == 3
    for e in found:
        assert completeness_ok(e, 1e-6), (e.delta, e.score, e.reference_score)
        assert abs(e.score - e.reference_score) > 1e-3
    assert any(k.startswith("model.10.m.0.attn.qkv") for k in found[0].channels)  # C2PSA's attention convs named


def test_several_boxes_equal_each_alone_on_yolo26_one2one():
    model = random_model("yolo26n.yaml")
    with torch.no_grad():  # random box outputs put every box far outside a 64 px image: make them ~1 stride wide
        for convs in model.model[-1].one2one_cv2:
            convs[-1].weight.mul_(0.01)
            convs[-1].bias.fill_(0.5)
    ex = relprop.Explainer(model, 64, dtype=D, branch="one2one")
    rgb = IMAGE[None, ..., ::-1].transpose(0, 3, 1, 2).copy()  # explain reads a numpy image as BGR
    pred = ex.graph(torch.as_tensor(rgb, dtype=D) / 255)[0][0]
    boxes = pred[:4].T  # xyxy, input pixels = original pixels (64x64 image)
    inside = ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= 64) & (boxes[:, 3] <= 64)
              & (boxes[:, 2] > boxes[:, 0] + 1) & (boxes[:, 3] > boxes[:, 1] + 1)).nonzero().flatten()[:3]
    assert len(inside) >= 2
    chosen = boxes[inside].detach().numpy()
    many = ex.explain(IMAGE, chosen, iou=0.9)
    for b, m in zip(chosen, many):
        one = ex.explain(IMAGE, b, iou=0.9)
        assert one.cls == m.cls and one.score == pytest.approx(m.score, abs=1e-12)
        torch.testing.assert_close(one.input_relevance, m.input_relevance, rtol=1e-10, atol=1e-12)
        assert completeness_ok(one, 1e-6)

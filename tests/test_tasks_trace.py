"""fxgraph traces every ultralytics task and family of issue 27 equal to ultralytics's own eval outputs: pose (YOLOv8,
11, 26), OBB (YOLOv8, 11, 26), classify (YOLOv8, 11), YOLOv10 (both branches) and YOLO12 (detect, segment), at two
sizes (float32 at 32 px, float64 at 64 px), records the task's facts, marks its head outputs and keeps coupling and
FLOP counting working."""

from __future__ import annotations

import operator

import pytest
import torch

import fxgraph
import pruning
from fxgraph import nodeinfo, ops
from fxgraph.stats import gflops

from tests.tasks_fixtures import CASES, TASK_MODELS, task_model, task_trace

SIZES = ((32, torch.float32, 1e-4), (64, torch.float64, 1e-10))


@pytest.mark.parametrize("yaml,branch", CASES, ids=[f"{y}-{b or 'default'}" for y, b in CASES])
@pytest.mark.parametrize("imgsz,dtype,tol", SIZES, ids=["f32-32", "f64-64"])
def test_trace_equals_ultralytics(yaml, branch, imgsz, dtype, tol):
    g = task_trace(yaml, imgsz, dtype, branch)
    model = task_model(yaml).to(dtype)
    try:
        x = torch.rand(2, 3, imgsz, imgsz, dtype=dtype, generator=torch.Generator().manual_seed(1))
        want = fxgraph.reference_outputs(model, x, branch=branch)
    finally:
        model.float()
    got = g.module(x)
    assert len(got) == len(want) == len(g.output_names)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert float((a - b).abs().max().detach()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("yaml,branch", CASES, ids=[f"{y}-{b or 'default'}" for y, b in CASES])
def test_facts_roles_coupling(yaml, branch):
    g = task_trace(yaml, 64, torch.float64, branch)
    task, box_format, kpt_shape = TASK_MODELS[yaml]
    facts = g.facts
    assert (facts.task, facts.kpt_shape) == (task, kpt_shape) and g.task == task
    assert facts.box_format == ("xyxy" if branch == "one2one" else box_format)
    heads = [fxgraph.info(n) for n in g.nodes() if fxgraph.info(n).is_head_output]
    outputs = {h.output for h in heads}
    want = {"pose": {nodeinfo.KEYPOINTS}, "obb": {nodeinfo.ANGLE}, "segment": {nodeinfo.MASK_COEFFICIENTS,
                                                                               nodeinfo.PROTO}}.get(task, set())
    if task == "classify":
        assert [h.module_path for h in heads] == [f"model.{facts.head_layer}.linear"]
        assert outputs == {nodeinfo.CLASSES}
    else:
        assert {nodeinfo.BOX, nodeinfo.CLASSES} | want <= outputs
        assert sum(h.output == nodeinfo.CLASSES for h in heads) == len(g.stride)
    kinds = {fxgraph.info(n).kind for n in g.nodes()}
    assert kinds <= ops.ALL_KINDS
    coupling = pruning.analyze(g)  # the coupling analysis runs; head outputs stay protected
    assert coupling.groups
    assert gflops(g) > 0


def test_index_and_angle_ops_are_linear_and_elementwise_kinds():
    g = task_trace("yolo11n-obb.yaml", 64)
    kinds = [fxgraph.info(n).kind for n in g.nodes()]
    assert "sin" in kinds and "cos" in kinds
    assert {"sin", "cos"} <= ops.ELEMENTWISE_KINDS and {"slice", "select"} <= ops.LINEAR_KINDS
    pose = task_trace("yolov8n-pose.yaml", 64)
    assert "slice" in {fxgraph.info(n).kind for n in pose.nodes()}


def test_symbolic_size_arithmetic_is_size():
    """YOLO12's area attention multiplies the (dynamic) batch by the area count in Python: a SIZE node, not data."""
    g = task_trace("yolo12n.yaml", 64)
    sizes = [n for n in g.nodes() if n.target is operator.mul]
    assert sizes and all(fxgraph.info(n).kind == ops.SIZE for n in sizes)
    assert all(fxgraph.info(a).kind not in ops.NON_DATA for n in g.nodes() if fxgraph.info(n).kind == "reshape"
               for a in fxgraph.data_args(n))


def test_inplace_activations_trace_out_of_place():
    """A checkpoint whose activations are in-place (an older ultralytics's SiLU(inplace=True), Classify's
    Dropout(inplace=True)) traces to out-of-place ops, equal to the model's own outputs."""
    import copy

    model = copy.deepcopy(task_model("yolov8n-cls.yaml"))
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.SiLU, torch.nn.Dropout))]
    for m in acts:
        m.inplace = True
    g = fxgraph.trace(model, imgsz=32)
    targets = {str(n.target) for n in g.nodes()}
    assert not any(t.endswith("_.default") for t in targets), targets
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(g.module(x)[0], fxgraph.reference_outputs(model, x)[0], atol=1e-6)
    assert all(m.inplace for m in acts)  # the caller's model is left as it was


def test_rtdetr_is_refused_naming_the_op():
    with pytest.raises(fxgraph.UnsupportedModelError, match=r"RTDETRDecoder.*grid_sampler_2d"):
        fxgraph.trace("rtdetr-l.yaml", imgsz=64)

"""The joint-graph relevance pass (relprop.joint): forward and backward traced into ATen graphs equal the eager pass
(float64, completeness holds), the one-graph form for weight targets goes whole through torch.compile(fullgraph=True)
(aot_eager on CPU: a graph break fails), it has fewer ops per box than eager, it never syncs with the host, and any
failure falls back to eager with one warning."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import relprop
from relprop.engine import RelevanceGraph
from relprop.joint import JointRelevance, aten_ops

from tests.test_compiled import graph64
from tests.test_relprop_sync import _Recorder

D = torch.float64


@functools.lru_cache(maxsize=None)
def setup(name: str):
    """(eager engine, joint engine, x, refs, weights for 2 targets, the eager Relevance) for a model at 64 px."""
    eager = RelevanceGraph(graph64(name).module)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=gen, dtype=D)
    refs = eager.reference(torch.zeros(1, 3, 64, 64, dtype=D))
    step = eager.forward(x, refs)
    w = torch.rand(2, *step.outputs[0].shape[1:], generator=gen, dtype=D)
    return eager, JointRelevance(eager), x, refs, w, step.backward(w)


def assert_same(got, want):
    torch.testing.assert_close(got.attribution, want.attribution, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.score, want.score, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.reference_score, want.reference_score, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.delta, want.delta, rtol=0, atol=1e-10)
    assert float(got.delta.abs().max()) < 1e-8  # completeness, as in eager
    assert got.channels.keys() == want.channels.keys()
    for key in want.channels:
        torch.testing.assert_close(got.channels[key], want.channels[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
def test_joint_pass_equals_eager(name):
    eager, joint, x, refs, w, want = setup(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning fails here
        two_phase = joint.forward(x, refs).backward(w)
        one_graph = joint.relevance(x, refs, w)
    assert joint.failed is None
    assert_same(two_phase, want)
    assert_same(one_graph, want)
    # a target function (not weights) goes through the two phases, its cotangents from autograd over it alone
    fn = joint.forward(x, refs).backward(lambda out: out[0][:, 4:6].sum((1, 2)))
    torch.testing.assert_close(fn.attribution, eager.forward(x, refs).backward(
        lambda out: out[0][:, 4:6].sum((1, 2))).attribution, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
def test_one_graph_compiles_whole_and_equals_eager(name):
    """The one graph (forward + D backwards) under torch.compile(fullgraph=True, backend="aot_eager")."""
    eager, traced, x, refs, w, want = setup(name)
    joint = JointRelevance(eager, backend="aot_eager")
    traced.graphs(x, refs)
    joint._graphs = traced._graphs  # the forward and backward graphs traced once (the one graph is compiled here)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a graph break (fullgraph=True) would warn and fall back: fails here
        got = joint.relevance(x, refs, w)
    assert joint.failed is None
    assert_same(got, want)


def count_ops(run) -> int:
    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        run()
    return Count.n


def test_joint_pass_has_fewer_ops_per_box_than_eager():
    """ATen ops of one box: joint forward + backward graphs (DCE + CSE) against the eager pass's dispatched ops."""
    eager, joint, x, refs, w, _ = setup("yolov8n.yaml")
    graphs = joint.graphs(x, refs)
    per_box = aten_ops(graphs.forward_gm) + aten_ops(graphs.backward_gm)
    eager_ops = count_ops(lambda: eager.forward(x, refs).backward(w[0]))
    assert per_box < 0.95 * eager_ops, (per_box, eager_ops)  # measured: 1,215 against 1,328 (float64, 64 px)
    # the one graph for 2 targets: the forward, 2 backwards, and per target only its seeds, scores and delta (plus
    # one stack per tap, of its per-filter relevance)
    extra = aten_ops(joint.one_graph(x, refs, 2)) - aten_ops(graphs.forward_gm) - 2 * aten_ops(graphs.backward_gm)
    assert extra <= len(graphs.sink_shapes) + 12, extra


def test_clean_removes_dead_and_repeated_ops():
    """`clean` (DCE + CSE) on a traced graph: a dead op and a repeated subexpression go, the result stays."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from relprop.joint import clean

    def f(x):
        (x * 3).exp()  # dead
        return (x.sin() + 1) * (x.sin() + 1)  # sin and add computed twice

    gm = make_fx(f)(torch.randn(4, dtype=D))
    before = aten_ops(gm)
    x = torch.randn(4, dtype=D)
    want = gm(x)
    gm = clean(gm)
    assert aten_ops(gm) == before - 4  # mul, exp, the second sin and add
    torch.testing.assert_close(gm(x), want, rtol=0, atol=0)


@pytest.mark.parametrize("mutation", ["fresh", "view"])
def test_clean_keeps_in_place_writes_apart(mutation):
    """Two equal values, one written in place afterwards: CSE must not merge them (an in-place op on a fresh value
    becomes out-of-place first; a write through a view leaves the graph without CSE)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from relprop.joint import clean

    def f(x):
        a, b = x.abs(), x.abs()
        (a if mutation == "fresh" else a[:2]).sub_(1)
        return a * 3 + b

    x = torch.randn(4, dtype=D)
    gm = clean(make_fx(f)(x.clone()))
    torch.testing.assert_close(gm(x), f(x.clone()), rtol=0, atol=0)
    if mutation == "fresh":
        assert not any("sub_" in str(n.target) for n in gm.graph.nodes)
        assert sum("abs" in str(n.target) for n in gm.graph.nodes) == 1  # the two abs merged once it is functional


def test_joint_pass_never_syncs_with_the_host():
    eager, joint, x, refs, w, _ = setup("yolov8n.yaml")
    joint.forward(x, refs).backward(w)  # traced (and warmed up) outside the recorder
    rec = _Recorder()
    with rec:
        joint.forward(x, refs).backward(w)
        joint.relevance(x, refs, w)
    assert not rec.bad, f"host synchronisations in the joint pass: {sorted(set(rec.bad))}"


def test_a_tracing_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    import torch.fx.experimental.proxy_tensor as proxy_tensor

    def broken(*args, **kwargs):
        raise RuntimeError("make_fx unavailable")

    eager, _, x, refs, w, want = setup("yolov8n.yaml")
    joint = JointRelevance(eager)
    monkeypatch.setattr(proxy_tensor, "make_fx", broken)
    with pytest.warns(RuntimeWarning, match="joint-graph relevance pass is not available here .*make_fx unavailable"):
        got = joint.forward(x, refs).backward(w)
    assert joint.failed is not None
    assert_same(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every call
        assert_same(joint.relevance(x, refs, w), want)


def test_explainer_compile_graph_equals_eager():
    g = graph64("yolov8n.yaml")
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    kw = dict(box=(0, 0, 64, 64), iou=0.01)
    joint = relprop.Explainer(g, compile="graph")
    assert isinstance(joint.engine, JointRelevance)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = joint.explain(image, **kw)
    want = relprop.Explainer(g, compile=False).explain(image, **kw)
    assert joint.engine.failed is None
    torch.testing.assert_close(got.input_relevance, want.input_relevance, rtol=1e-12, atol=1e-14)
    assert abs(got.delta - want.delta) < 1e-10 and abs(got.delta) < 1e-8


def test_explainer_compile_cudagraph_asks_inductor_for_graph_capture():
    """compile="cudagraph" is torch.compile in mode 'reduce-overhead' (CUDA graphs); nothing compiles before a call."""
    from relprop.compiled import CompiledRelevance

    engine = relprop.Explainer(graph64("yolov8n.yaml"), compile="cudagraph").engine
    assert isinstance(engine, CompiledRelevance) and (engine.backend, engine.mode) == ("inductor", "reduce-overhead")
    assert relprop.Explainer(graph64("yolov8n.yaml"), compile=True).engine.mode is None


def test_unknown_compile_choice_is_refused():
    with pytest.raises(relprop.RelpropError, match="compile='fast': choose True"):
        relprop.Explainer(graph64("yolov8n.yaml"), compile="fast")
    with pytest.raises(relprop.RelpropError, match="unknown joint-graph backend 'tvm'"):
        JointRelevance(RelevanceGraph(graph64("yolov8n.yaml").module), backend="tvm")


@pytest.mark.parametrize("flags, want", [(["--graph"], "graph"), (["--compile"], True),
                                         (["--cudagraph"], "cudagraph")])
def test_cli_graph_flag_builds_a_joint_explainer(monkeypatch, tmp_path, flags, want):
    """`python -m relprop explain ... --graph` asks for Explainer(compile="graph"), `--compile` for compile=True."""
    from ultralytics.utils import ASSETS

    import importlib

    from relprop import cli

    explainer = importlib.import_module("relprop.explainer")  # the module (relprop.explainer is also a function)
    seen = []

    def fake(*args, **kwargs):
        seen.append(kwargs.get("compile"))
        raise relprop.RelpropError("stop here: the Explainer's arguments are what is tested")

    monkeypatch.setattr(explainer, "Explainer", fake)
    assert cli.main(["explain", str(ASSETS / "bus.jpg"), "--imgsz", "64", *flags, "--out", str(tmp_path / "r")]) == 2
    assert seen == [want]

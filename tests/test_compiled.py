"""The compiled relevance pass (relprop.compiled): Dynamo traces the whole explain forward with fullgraph=True (a graph
break fails), its results equal the eager pass, it is cached per shape, and any compiler failure falls back to eager
with one warning.  The CPU tests use the aot_eager backend (Dynamo + AOTAutograd, no C++ build) to keep CI fast;
inductor and CUDA graphs run in the cuda-marked test and benchmarks/gpu_suite.py."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch.nn import functional as F

import fxgraph
import relprop
from relprop.compiled import CompiledRelevance, compile_by_default
from relprop.engine import RelevanceGraph

from tests.conftest import cached_model

D = torch.float64


@functools.lru_cache(maxsize=None)
def graph64(name: str) -> fxgraph.FlatGraph:
    return fxgraph.trace(cached_model(name), imgsz=64, fold_bn=True, dtype=D)


def strict(engine: RelevanceGraph, **kw) -> CompiledRelevance:
    """A compiled engine whose fallback would fail the test (warnings are errors)."""
    return CompiledRelevance(engine, backend="aot_eager", **kw)


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
def test_compiled_pass_has_no_graph_break_and_equals_eager(name):
    g = graph64(name)
    eager = RelevanceGraph(g.module)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=gen, dtype=D)
    refs = eager.reference(torch.zeros(1, 3, 64, 64, dtype=D))
    step = eager.forward(x, refs)
    w = torch.rand(2, *step.outputs[0].shape[1:], generator=gen, dtype=D)
    want = step.backward(w)
    compiled = strict(eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning: a graph break (fullgraph=True) fails here
        got = compiled.forward(x, refs).backward(w)
    assert compiled.failed is None
    torch.testing.assert_close(got.attribution, want.attribution, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.delta, want.delta, rtol=0, atol=1e-10)
    assert float(got.delta.abs().max()) < 1e-8  # completeness, as in eager
    assert got.channels.keys() == want.channels.keys()
    for key in want.channels:
        torch.testing.assert_close(got.channels[key], want.channels[key], rtol=1e-12, atol=1e-14)


def one_op(f, shape=(6,)) -> RelevanceGraph:
    class Op(torch.nn.Module):
        def forward(self, x):
            return f(x)

    return RelevanceGraph(fxgraph.trace_module(Op().to(D), torch.randn(2, *shape, dtype=D)))


def counting_compiler(calls: list):
    def compiler(fn, **kw):
        calls.append(kw)
        return torch.compile(fn, **kw)

    return compiler


def test_compiled_pass_is_cached_per_shape():
    calls: list = []
    compiled = CompiledRelevance(one_op(F.silu), backend="aot_eager", compiler=counting_compiler(calls))
    x, x0 = torch.randn(2, 6, dtype=D), torch.zeros(1, 6, dtype=D)
    refs = compiled.reference(x0)
    for _ in range(3):
        rel = compiled.forward(x, refs).backward(lambda y: y[0].sum(1))
    torch.testing.assert_close(rel.attribution, F.silu(x) - F.silu(x0), rtol=0, atol=1e-15)
    assert len(calls) == 1 and calls[0]["fullgraph"] is True
    compiled.forward(torch.randn(3, 6, dtype=D), refs).backward(lambda y: y[0].sum(1))
    assert len(calls) == 2  # a new input shape compiles anew


def test_a_graph_break_falls_back_to_eager_with_one_warning():
    """A rule that synchronises with the host breaks the graph: fullgraph=True refuses it, the pass runs eagerly."""
    def host_syncing_derivative(z):
        return torch.sigmoid(z) * float(z.sum() * 0 + 1)  # float(tensor): a graph break

    gm = fxgraph.trace_module(torch.nn.Sequential(torch.nn.SiLU()).to(D), torch.randn(2, 6, dtype=D))
    engine = RelevanceGraph(gm, {"silu": relprop.Rescale(derivative=host_syncing_derivative)})
    compiled = CompiledRelevance(engine, backend="aot_eager")
    x, refs = torch.randn(2, 6, dtype=D), engine.reference(torch.zeros(1, 6, dtype=D))
    with pytest.warns(RuntimeWarning, match="compiled relevance pass is not available here"):
        rel = compiled.forward(x, refs).backward(lambda y: y[0].sum(1))
    assert compiled.failed is not None
    torch.testing.assert_close(rel.attribution, engine.forward(x, refs).backward(lambda y: y[0].sum(1)).attribution)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every call
        compiled.forward(x, refs).backward(lambda y: y[0].sum(1))


def test_explain_never_fails_because_of_the_compiler(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    g = graph64("yolov8n.yaml")
    ex = relprop.Explainer(g, compile=True)
    assert isinstance(ex.engine, CompiledRelevance)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        ex.reference(torch.zeros(1, 3, 64, 64, dtype=D))
        step = ex.engine.forward(image[None].to(D), ex.reference(torch.zeros(1, 3, 64, 64, dtype=D)))
    rel = step.backward(torch.ones(*step.outputs[0].shape[1:], dtype=D))
    assert float(rel.delta.abs().max()) < 1e-8
    assert relprop.Explainer(g).engine.__class__ is RelevanceGraph  # the default on CPU: eager (measured)
    assert compile_by_default("cpu") is False


def test_unknown_backend_is_refused():
    with pytest.raises(relprop.RelpropError, match="unknown compile backend 'tvmx'"):
        CompiledRelevance(one_op(F.silu), backend="tvmx")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_cuda_compiled_and_graph_captured_pass_equals_eager(mode):
    """Inductor on CUDA, and its CUDA-graph capture (reduce-overhead), against the eager pass, float32."""
    g = fxgraph.trace(cached_model("yolov8n.yaml"), imgsz=64, fold_bn=True, device="cuda")
    eager = RelevanceGraph(g.module)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=gen, device="cuda")
    refs = eager.reference(torch.zeros(1, 3, 64, 64, device="cuda"))
    step = eager.forward(x, refs)
    w = torch.rand(2, *step.outputs[0].shape[1:], generator=gen, device="cuda")
    want = step.backward(w)
    compiled = CompiledRelevance(eager, backend="inductor", mode=mode)
    for _ in range(3):  # warm-up, record, replay
        got = compiled.forward(x, refs).backward(w)
    assert compiled.failed is None
    torch.testing.assert_close(got.attribution, want.attribution, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.delta, want.delta, rtol=0, atol=1e-3)


def test_cli_compile_flag_builds_a_compiled_explainer(tmp_path, monkeypatch):
    """`python -m relprop explain ... --compile` explains through a CompiledRelevance (here with a compiler that
    fails, so the run also shows the eager fallback end to end: one warning, the explanation written)."""
    from relprop import cli, compiled

    built = []

    def broken_compile(*args, **kwargs):
        raise RuntimeError("inductor unavailable")

    real = compiled.compile_relevance
    monkeypatch.setattr(compiled, "compile_relevance", lambda engine, **kw: built.append(real(engine, **kw)) or built[-1])
    monkeypatch.setattr(torch, "compile", broken_compile)
    from ultralytics.utils import ASSETS

    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="inductor unavailable"):
        assert cli.main(["explain", str(ASSETS / "bus.jpg"), "--imgsz", "160", "--box", "50,400,250,900",
                         "--iou", "0.05", "--compile", "--out", str(out)]) == 0
    assert len(built) == 1 and built[0].failed is not None
    assert (out / "explanations.json").is_file()

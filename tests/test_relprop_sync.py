"""The relevance pass (forward of the rule graph and its backward) never synchronises with the host.

Checked on CPU by recording every aten op the pass dispatches: a host sync shows up as `_local_scalar_dense`
(`.item()`, `bool(tensor)`, `float(tensor)`), a data-dependent shape (`nonzero`, `masked_select`, `masked_scatter`)
or a copy to the host: `_to_copy` naming the cpu as its device (`.cpu()`, `.to("cpu")`; the pass has no reason to name
a device, so on a CPU-only run a cpu-to-cpu one is counted too), and `copy_` into a cpu tensor from another device's
tensor (on a CPU-only run, any `copy_` into a cpu tensor: the pass copies nothing in place).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from relprop.engine import RelevanceGraph

from tests.conftest import cached_trace

aten = torch.ops.aten
_SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_scatter.default,
            aten.masked_select.default, aten.item.default}


class _Recorder(TorchDispatchMode):
    """Records the aten ops that would make the host wait for the device."""

    def __init__(self):
        super().__init__()
        self.bad: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SYNCING:
            self.bad.append(str(func))
        elif func is aten._to_copy.default and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cpu":
            self.bad.append(f"{func} to cpu")
        elif func is aten.copy_.default and args[0].device.type == "cpu" \
                and (args[1].device.type != "cpu" or not torch.cuda.is_available()):
            self.bad.append(f"{func} into cpu")
        return func(*args, **kwargs)


def test_relevance_pass_is_sync_free():
    g = cached_trace("yolov8n.yaml", 64, fold_bn=True)
    engine = RelevanceGraph(g.module)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    refs = engine.reference(torch.zeros(1, 3, 64, 64))
    step = engine.forward(x, refs)  # warm-up outside the recorder: lazy initialisation may sync once
    w = torch.rand(3, *step.outputs[0].shape[1:], generator=gen)
    step.backward(w)
    rec = _Recorder()
    with rec:
        step = engine.forward(x, refs)
        rel = step.backward(w)
    assert rel.attribution.shape == (2, 3, 3, 64, 64)
    assert not rec.bad, f"host synchronisations in the relevance pass: {sorted(set(rec.bad))}"


def test_recorder_catches_a_sync():
    """The recorder itself: `.item()`, `bool()`, `nonzero`, a copy to the host by `.to("cpu")` and one by `copy_` into
    a host tensor are seen (the check above can fail); a dtype cast on the same device is not a sync."""
    rec = _Recorder()
    t = torch.ones(3)
    host = torch.empty(3)
    with rec:
        t.sum().item()
        bool(t.any())
        t.nonzero()
        t.masked_select(t > 0)
        t.to("cpu", copy=True)
        host.copy_(t)
    assert {str(aten._local_scalar_dense.default), str(aten.nonzero.default), str(aten.masked_select.default),
            f"{aten._to_copy.default} to cpu"} <= set(rec.bad)
    expected_copy = f"{aten.copy_.default} into cpu"
    assert expected_copy in rec.bad or torch.cuda.is_available()  # on a GPU machine a cpu-to-cpu copy_ is no sync
    cast = _Recorder()
    with cast:
        t.to(torch.float64)
    assert not cast.bad


def test_reference_cache_matches_by_value_without_host_copies():
    """An equal reference built anew hits the cache, a different one misses; the lookup copies nothing to the host."""
    from relprop.explainer import Explainer

    ex = Explainer(cached_trace("yolov8n.yaml", 64, fold_bn=True))
    first = ex.reference(torch.zeros(1, 3, 64, 64))
    rec = _Recorder()
    with rec:
        again = ex.reference(torch.zeros(1, 3, 64, 64))
    assert again is first and not rec.bad
    other = torch.zeros(1, 3, 64, 64)
    other[0, 1, 5, 7] = 0.5
    assert ex.reference(other) is not first
    assert ex.reference(torch.zeros(1, 3, 64, 64)) is first and len(ex._refs) == 2


class _Counter(TorchDispatchMode):
    """Counts the aten ops dispatched, by op."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func)] = self.calls.get(str(func), 0) + 1
        return func(*args, **(kwargs or {}))


def test_silu_rule_takes_its_tangent_from_the_reference_pass():
    """A SiLU's rescale rule needs f' where |Δx| is tiny; f'(x0) is computed once per reference, so a relevance pass
    runs one sigmoid per SiLU (its forward), not a second one at the midpoint (~40% of the rule's work on CPU)."""
    g = cached_trace("yolov8n.yaml", 64, fold_bn=True)
    engine = RelevanceGraph(g.module)
    silu = sum(1 for n in g.module.graph.nodes if n.op == "call_function" and "silu" in str(n.target))
    refs = engine.reference(torch.zeros(1, 3, 64, 64))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    engine.forward(x, refs)
    count = _Counter()
    with count:
        engine.forward(x, refs)
    sigmoids = sum(n for op, n in count.calls.items() if "sigmoid" in op and "backward" not in op)
    silus = sum(n for op, n in count.calls.items() if op.startswith("aten.silu"))
    assert silu > 50 and silus == silu, (silu, count.calls)
    assert sigmoids <= silu // 10, count.calls  # the head's class sigmoid and the like, not one per SiLU


def test_explain_call_syncs_at_most_once():
    """A whole `Explainer.explain(image, box)` call, its reference cached, reads back once: box matching and target
    selection run on the device with fixed-shape masks, and every value the caller sees (relevance, channels, scores,
    reference scores, deltas, confidence, matches) comes back in one transfer at the end.  A comparison of the cached
    reference with a new one (`aten.equal`) would be a sync too, and is counted."""
    from relprop.explainer import Explainer

    ex = Explainer(cached_trace("yolov8n.yaml", 64, fold_bn=True))
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    pred = ex.graph.module(image[None])[0][0].detach()
    a = int(pred[4:].amax(0).argmax())
    x, y, w, h = pred[:4, a].tolist()
    box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    ex.explain(image, box, iou=0.5)  # warm-up: the reference pass is made and cached
    rec = _SyncCounter()
    with rec:
        e = ex.explain(image, box, iou=0.5)
    assert len(e.candidates) >= 1 and abs(e.delta) < 1e-3 * max(1.0, abs(e.score - e.reference_score))
    allowed = 0 if ex.graph.device.type == "cpu" else 1  # on the CPU the one read-back copies nothing: none is seen
    assert len(rec.syncs) <= allowed, rec.syncs


class _SyncCounter(_Recorder):
    """Every host synchronisation, counted (the one read-back of a CUDA call is a copy to the CPU; on a CPU-only run
    it is no op at all), plus `aten.equal`, which returns a Python bool."""

    def __init__(self):
        super().__init__()
        self.syncs = self.bad

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten.equal.default or func is aten.is_nonzero.default:
            self.bad.append(str(func))
        return super().__torch_dispatch__(func, types, args, kwargs)


def test_batchnorm_rule_is_sync_free():
    """An unfolded BatchNorm runs the BatchNorm rule (the gradient made contiguous): no host synchronisation either."""
    import fxgraph
    from tests.test_relprop_rules import BNThenTranspose

    gm = fxgraph.trace_module(BNThenTranspose(16).eval(), torch.randn(2, 16, 4, 4))
    engine = RelevanceGraph(gm)
    assert {type(b.rule).__name__ for b in engine.bound.values()} == {"BatchNorm"}
    gen = torch.Generator().manual_seed(0)
    x, x0, w = torch.rand(1, 16, 4, 4, generator=gen), torch.rand(1, 16, 4, 4, generator=gen), torch.rand(1, 16, 16)
    refs = engine.reference(x0)
    engine.relevance(x, refs, lambda o: (o[0] * w).flatten(1).sum(1))  # warm-up
    rec = _Recorder()
    with rec:
        engine.relevance(x, refs, lambda o: (o[0] * w).flatten(1).sum(1))
    assert not rec.bad, f"host synchronisations in the relevance pass: {sorted(set(rec.bad))}"

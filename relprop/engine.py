"""The rule engine: rewrite an annotated fx graph so that one ordinary backward pass computes DeepSHAP relevance.

`RelevanceGraph(gm, rules)` copies the graph and replaces the target of every node that needs a rule with a small
caller of that rule's autograd Function (linear ops keep their ATen op: their gradient is the rule).  It also inserts
a *tap* after every filter op (conv, transposed conv, linear) whose backward reports relevance per output channel.
The copy shares the parameters of `gm`; `gm` itself is not modified.

The rewritten module runs in one of three modes:

* record  — on the reference x0, without autograd: each rewritten node keeps what its rule needs of the reference
            (its input, output, argmax indices).  The result, `References`, can be cached and reused: explaining
            against a fixed reference costs one forward and one backward of the input only.
* explain — on the input x, with autograd: each rewritten node runs its Function against the recorded reference.
* plain   — the original ops (what `module(x)` does outside the two passes).

Explaining is two-phase: `forward(x, refs)` runs the explain mode and returns a `Pass` holding the outputs; the caller
chooses its targets from `Pass.outputs` (which boxes, which candidates), then `Pass.backward(targets)` runs one
backward for all of them and returns the `Relevance`.  Nothing in the forward depends on the targets.

There is no Python loop over layers at run time and no module hook: the generated forward calls the rules.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import torch
from torch import fx

from fxgraph import folds_batch, info, nodeinfo, ops

from .composites import RulesSpec, resolve
from .errors import RelpropError, RuleError
from .rules import Bound
from .rules.base import secant_eps  # noqa: F401 - the rescale threshold, read here by the passes

PLAIN, RECORD, EXPLAIN = "plain", "record", "explain"


@dataclass
class References:
    """One reference pass: the reference input (batch R), its outputs, and what each rewritten node kept of it."""

    input: torch.Tensor
    outputs: tuple[torch.Tensor, ...]
    saved: dict[str, tuple] = field(repr=False)
    expanded: dict[int, "References"] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch(self) -> int:
        return self.input.shape[0]

    def nbytes(self) -> int:
        """Memory held by this reference pass (for cache budgeting and benchmarks)."""
        seen = {}
        for values in [(self.input,), self.outputs, *self.saved.values()]:
            for t in values:
                if isinstance(t, torch.Tensor):
                    seen[t.data_ptr()] = t.numel() * t.element_size()
        return sum(seen.values())


@dataclass
class Relevance:
    """The result of one pass for D targets on a batch of B inputs.

    `attribution` (B, D, *input): multipliers × (x − x0);  `score` / `reference_score` (B, D): the targets at x and x0;
    `delta` (B, D): Σ attribution − (score − reference_score);  `channels`: tap key → (B, D, C) relevance per filter;
    `outputs`: the graph's outputs at x (detached).
    """

    attribution: torch.Tensor
    score: torch.Tensor
    reference_score: torch.Tensor
    delta: torch.Tensor
    channels: dict[str, torch.Tensor]
    outputs: tuple[torch.Tensor, ...]


class TapFn(torch.autograd.Function):
    """Identity on a tensor y that also sends its relevance per channel, Σ m_y·Δy over every dim but batch and
    `channel_dim`, into the gradient of `sink` (a zero (B, C) leaf): how per-filter relevance is read off the one
    backward pass without hooks.
    """

    @staticmethod
    def forward(ctx, y, y0, sink, channel_dim):  # noqa: D102
        ctx.save_for_backward(y - y0)
        ctx.channel_dim = channel_dim
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (dy,) = ctx.saved_tensors
        rel = grad * dy
        if rel.dim() > 2:
            cd = ctx.channel_dim % rel.dim()
            rel = rel.sum(dim=tuple(d for d in range(1, rel.dim()) if d != cd))
        return grad, None, rel, None


@dataclass
class _Tape:
    mode: str = PLAIN
    saved: dict[str, tuple] = field(default_factory=dict)
    sinks: dict[int, torch.Tensor] = field(default_factory=dict)
    eps: float = 1e-5


class RuleCall:
    """The target of a rewritten node: the original op (plain), its rule's `record` (on the reference) or `explain`
    (on the input), as the tape's mode says.  `relprop.compiled` reads `bound` to build a tape-free graph."""

    def __init__(self, bound: Bound, tape: _Tape):
        self.bound, self.tape = bound, tape
        self.__name__ = self.__qualname__ = f"relprop_{type(bound.rule).__name__.lower()}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tape, bound = self.tape, self.bound
        if tape.mode == EXPLAIN:
            try:
                saved = tape.saved[bound.name]
            except KeyError:
                raise RelpropError(f"no reference recorded for node {bound.name}; run reference() first") from None
            return bound.explain(args, kwargs, saved, tape.eps)
        if tape.mode == RECORD:
            out, tape.saved[bound.name] = bound.record(args, kwargs)
            return out
        return bound.target(*args, **kwargs)


class TapCall:
    """The target of a tap node after filter op number `index`: identity, recording y0 on the reference and sending
    per-channel relevance into a fresh sink (see `TapFn`) on the input."""

    __name__ = __qualname__ = "relprop_tap"

    def __init__(self, index: int, channel_dim: int, tape: _Tape):
        self.index, self.channel_dim, self.tape = index, channel_dim, tape

    @property
    def key(self) -> str:
        return f"tap:{self.index}"

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        tape = self.tape
        if tape.mode == EXPLAIN:
            sink = torch.zeros(y.shape[0], y.shape[self.channel_dim], dtype=y.dtype, device=y.device,
                               requires_grad=True)
            tape.sinks[self.index] = sink
            return TapFn.apply(y, tape.saved[self.key][0], sink, self.channel_dim)
        if tape.mode == RECORD:
            tape.saved[self.key] = (y,)
        return y


class RelevanceGraph:
    """An annotated fx GraphModule rewritten with relevance rules (see the module docstring).

    `channels=True` taps every filter op so that `Relevance.channels` holds relevance per output filter, keyed by the
    op's module path (e.g. ``model.4.m.0.cv1.conv``) or, for a functional op, its node name.
    """

    def __init__(self, gm: fx.GraphModule, rules: RulesSpec = None, *, channels: bool = True):
        self.composite = resolve(rules)
        self._tape = _Tape()
        graph = fx.Graph()
        value_map: dict[fx.Node, fx.Node] = {}
        out = graph.graph_copy(gm.graph, value_map)
        graph.output(out)
        self.bound: dict[str, Bound] = {}
        self.tap_keys: list[str] = []
        for node in list(graph.nodes):
            if node.op in ("placeholder", "get_attr", "output"):
                continue
            if node.op != "call_function":
                raise RuleError(f"node {node.name} ({node.op} {node.target}) is not a call of an op; trace the model "
                                "into a flat graph of ATen ops first (fxgraph.trace_module)")
            rule = self.composite.rule_for(node)
            bound = rule.bind(node) if rule is not None else None
            if bound is not None:
                self.bound[node.name] = bound
                node.target = self._caller(bound)
            if channels and info(node).kind in ops.FILTER_KINDS:
                self._insert_tap(graph, node)
        self._check_overrides(graph)
        graph.lint()
        self.module = fx.GraphModule(gm, graph, class_name="RelevanceGraphModule")
        self.outputs_are_tuple = isinstance(out, (tuple, list))
        self.folds_batch = folds_batch(gm)  # then a batch-1 reference is recorded again at the input's batch

    # -- rewriting -------------------------------------------------------------------------------------------------

    def _check_overrides(self, graph: fx.Graph) -> None:
        """A per-node override that matches no node is a typo: say so rather than silently use the default."""
        import fnmatch

        names = {n.name for n in graph.nodes}
        paths = {info(n).module_path or "" for n in graph.nodes if n.op != "output"} - {""}
        for key in self.composite.names:
            if key not in names and not any(fnmatch.fnmatchcase(p, key) for p in paths):
                raise RuleError(f"rule override '{key}' matches no node name or module path of this graph "
                                f"(e.g. {sorted(names)[:3]} or {sorted(paths)[:3]})")

    def _caller(self, bound: Bound) -> "RuleCall":
        return RuleCall(bound, self._tape)

    def _insert_tap(self, graph: fx.Graph, node: fx.Node) -> None:
        key = info(node).module_path or node.name
        tap = TapCall(len(self.tap_keys), -1 if info(node).kind == "linear" else 1, self._tape)
        self.tap_keys.append(key)
        with graph.inserting_after(node):
            new = graph.call_function(tap, (node,))
        new.meta.update(node.meta)
        nodeinfo.update(new, kind="identity")
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)

    @contextlib.contextmanager
    def _mode(self, mode: str, saved: dict | None = None, eps: float = 1e-5) -> Iterator[_Tape]:
        tape = self._tape
        if tape.mode != PLAIN:
            raise RelpropError("this RelevanceGraph is already running a pass (it is not re-entrant)")
        tape.mode, tape.saved, tape.sinks, tape.eps = mode, saved if saved is not None else {}, {}, eps
        try:
            yield tape
        finally:
            tape.mode, tape.saved, tape.sinks = PLAIN, {}, {}

    # -- passes ----------------------------------------------------------------------------------------------------

    def _outputs(self, result: Any) -> tuple[torch.Tensor, ...]:
        return tuple(result) if self.outputs_are_tuple else (result,)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The plain forward (original ops)."""
        return self._outputs(self.module(x))

    def reference(self, x0: torch.Tensor) -> References:
        """Record the reference pass on x0 (batch R; R = 1 broadcasts over any input batch)."""
        with self._mode(RECORD) as tape, torch.no_grad():
            outputs = self._outputs(self.module(x0))
            saved = dict(tape.saved)
        return References(x0.detach(), tuple(o.detach() for o in outputs), saved)

    def forward(self, x: torch.Tensor, refs: References) -> "Pass":
        """Phase one: the forward of x (batch B) against `refs` (batch 1 or B), with autograd.

        The returned `Pass` holds the outputs at x and at x0; choose targets from them, then call `Pass.backward`.
        """
        if refs.batch not in (1, x.shape[0]):
            raise RelpropError(f"reference batch {refs.batch} must be 1 or the input batch {x.shape[0]}")
        refs = self.at_batch(refs, x.shape[0])
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), self._mode(EXPLAIN, refs.saved, secant_eps(x.dtype)) as tape:
            outputs = self._outputs(self.module(x))
            sinks = [tape.sinks[i] for i in range(len(self.tap_keys))]
        return Pass(self, x, refs, outputs, sinks)

    def at_batch(self, refs: References, batch: int) -> References:
        """`refs` itself, or, where the graph folds the batch into another size (`fxgraph.folds_batch`) and a
        batch-1 reference meets a larger batch, the same reference recorded at that batch (kept on `refs`)."""
        if not self.folds_batch or refs.batch == batch:
            return refs
        if batch not in refs.expanded:
            refs.expanded[batch] = self.reference(refs.input.expand(batch, *refs.input.shape[1:]))
        return refs.expanded[batch]

    def relevance(self, x: torch.Tensor, refs: References, target: Targets, *, chunk: int = 1) -> Relevance:
        """`forward(x, refs).backward(target, chunk=chunk)`: for a target that does not depend on the outputs' values."""
        return self.forward(x, refs).backward(target, chunk=chunk)


Targets = Union[Callable[[tuple[torch.Tensor, ...]], torch.Tensor], torch.Tensor]


class Pass:
    """One forward of x against recorded references (phase one), waiting for its targets (phase two).

    `outputs` (detached) are the graph's outputs at x and `reference_outputs` those at x0: choose what to explain from
    them, then `backward(targets)` runs the backward once and returns the `Relevance`.  A Pass holds the autograd
    graph of its forward until then; it can be backpropagated once.
    """

    def __init__(self, graph: RelevanceGraph, x: torch.Tensor, refs: References, outputs: tuple[torch.Tensor, ...],
                 sinks: list[torch.Tensor]):
        self.graph, self.input, self.refs = graph, x, refs
        self.outputs = tuple(o.detach() for o in outputs)
        self._live, self._sinks, self._used = outputs, sinks, False

    @property
    def reference_outputs(self) -> tuple[torch.Tensor, ...]:
        return self.refs.outputs

    @property
    def batch(self) -> int:
        return self.input.shape[0]

    def scores(self, targets: Targets, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The targets evaluated on `outputs`: (B,) or (B, D).

        `targets` is a function of the outputs returning (B,) or (B, D) scalars, each *linear* in the outputs (a
        selection or sum: DeepLIFT's completeness is stated for the graph's outputs), or a weight tensor W on the first
        output y: shaped like one example of y (one target, Σ W·y) or (D, *that) (D targets).
        """
        if callable(targets):
            return targets(outputs)
        if not isinstance(targets, torch.Tensor):
            raise RelpropError(f"targets must be a function of the outputs or a weight tensor; got "
                               f"{type(targets).__name__}")
        y = outputs[0]
        w = targets.to(dtype=y.dtype, device=y.device)
        if tuple(w.shape) == tuple(y.shape[1:]):
            return y.flatten(1) @ w.flatten()
        if tuple(w.shape[1:]) == tuple(y.shape[1:]):
            return y.flatten(1) @ w.flatten(1).T
        raise RelpropError(f"target weights of shape {tuple(w.shape)} fit neither one example of the first output "
                           f"{tuple(y.shape[1:])} nor (D, *that)")

    def backward(self, targets: Targets, *, chunk: int = 1) -> Relevance:
        """Phase two: the relevance of each target, from one backward over this pass's forward.

        With `chunk` > 1 the backward runs `chunk` targets at a time batched with vmap (`is_grads_batched`); the
        default, one at a time over the retained graph, is faster on CPU, where torch's legacy vmap falls back to loops
        for convolution backward.
        """
        if self._used:
            raise RelpropError("this Pass was already backpropagated; run forward() again for new targets")
        x, refs, sinks = self.input, self.refs, self._sinks
        with torch.enable_grad():
            t = self.scores(targets, self._live)
        squeeze = t.dim() == 1
        t = t.unsqueeze(1) if squeeze else t
        if t.dim() != 2 or t.shape[0] != x.shape[0]:
            raise RelpropError(f"target must return shape (B,) or (B, D) with B={x.shape[0]}; got {tuple(t.shape)}")
        with torch.no_grad():
            t0 = self.scores(targets, refs.outputs)
            t0 = (t0.unsqueeze(1) if t0.dim() == 1 else t0).expand_as(t)
        self._used = True
        if squeeze:  # one target given as (B,): gradients without the target dim, no view per input to add or drop
            t, t0 = t[:, 0], t0[:, 0]
        grads = self._grads(t, [x, *sinks], chunk)
        with torch.no_grad():
            mult = grads[0]  # (B, D, *input), or (B, *input) for one target
            attribution = mult * (x - refs.input if squeeze else (x - refs.input).unsqueeze(1))
            score, reference_score = t.detach(), t0.detach()
            delta = attribution.flatten(t.dim()).sum(-1) - (score - reference_score)
            channels = self._channels(grads[1:])
        return Relevance(attribution, score, reference_score, delta, channels, self.outputs)

    def channel_relevance(self, targets: Callable[[tuple[torch.Tensor, ...]], torch.Tensor], *,
                          chunk: int = 1) -> dict[str, torch.Tensor]:
        """Phase two for per-filter relevance only: tap key → (B, D, C), the same values as `backward(...).channels`,
        without the input attribution (D × the input's size) or the targets at the reference.

        `targets` maps the outputs to (B, D) scalars, each linear in the outputs; target d of example b may differ
        from target d of example c (each image of a batch its own boxes).  Examples of a batch do not interact, so
        seeding target d of every example at once backpropagates D times, not B·D times.
        """
        if self._used:
            raise RelpropError("this Pass was already backpropagated; run forward() again for new targets")
        with torch.enable_grad():
            t = targets(self._live)
        if t.dim() != 2 or t.shape[0] != self.input.shape[0]:
            raise RelpropError(f"targets must return shape (B, D) with B={self.input.shape[0]}; got {tuple(t.shape)}")
        self._used = True
        grads = self._grads(t, list(self._sinks), chunk)
        with torch.no_grad():
            return self._channels(grads)

    def _grads(self, t: torch.Tensor, inputs: list[torch.Tensor], chunk: int) -> list[torch.Tensor]:
        """(B, D, *input.shape[1:]) gradient of each target d of t (B, D) w.r.t. each of `inputs`, seeding target d of
        every example at once; `chunk` targets per backward (vmap when > 1); t (B,): one target, each gradient
        shaped like its input.  Releases the autograd graph."""
        if t.dim() == 1:
            grads = torch.autograd.grad(t, inputs, torch.ones_like(t), allow_unused=True)
            self._live = self._sinks = None
            return [g if g is not None else torch.zeros_like(inp) for g, inp in zip(grads, inputs)]
        n = t.shape[1]
        per_input: list[list[torch.Tensor]] = [[] for _ in inputs]
        eye = torch.eye(n, dtype=t.dtype, device=t.device)
        for start, stop in _chunks(n, chunk):
            seeds = eye[start:stop].unsqueeze(1).expand(stop - start, *t.shape)  # one-hot on target d, every example
            retain = stop < n
            if n == 1:  # one target: (B, 1, ...) directly, one view per input instead of unsqueeze, cat and movedim
                grads = torch.autograd.grad(t, inputs, seeds[0], allow_unused=True)
                self._live = self._sinks = None
                return [g.unsqueeze(1) if g is not None else torch.zeros(inp.shape[0], 1, *inp.shape[1:],
                                                                         dtype=inp.dtype, device=inp.device)
                        for g, inp in zip(grads, inputs)]
            if stop - start == 1:
                grads = torch.autograd.grad(t, inputs, seeds[0], retain_graph=retain, allow_unused=True)
                grads = [g.unsqueeze(0) if g is not None else None for g in grads]
            else:
                grads = torch.autograd.grad(t, inputs, seeds, retain_graph=retain, allow_unused=True,
                                            is_grads_batched=True)
            for i, (g, inp) in enumerate(zip(grads, inputs)):
                per_input[i].append(g if g is not None else torch.zeros(stop - start, *inp.shape, dtype=inp.dtype,
                                                                        device=inp.device))
        self._live = self._sinks = None  # let the autograd graph go
        return [torch.cat(parts).movedim(0, 1) for parts in per_input]

    def _channels(self, sink_grads: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tap key → (B, D, C) relevance per filter (a key tapped twice adds up)."""
        channels: dict[str, torch.Tensor] = {}
        for key, value in zip(self.graph.tap_keys, sink_grads):
            channels[key] = channels[key] + value if key in channels else value
        return channels


def _chunks(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]

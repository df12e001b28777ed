"""The relevance pass as plain ATen graphs: the rule graph's forward and its backward (our rules' backwards inlined)
traced once with `make_fx`, cleaned by dead-code elimination and CSE, and run with no autograd engine and no Python
Function dispatch per op.

`trace_joint` traces, for one input / reference layout, the joint function

    (x, saved reference tensors, sinks, cotangents of the outputs) -> (outputs, ∂/∂x, ∂/∂sinks)

and splits it, as AOTAutograd does, into a forward graph (x, saved, sinks) -> (outputs, residuals) and a backward graph
(residuals, cotangents) -> (multipliers of x, per-filter relevance).  The split keeps explaining two-phase: targets are
still chosen from the forward's outputs, and each target is one call of the backward graph (a pure function: nothing
to retain between targets).  `JointRelevance.one_graph(x, refs, d)` fuses the forward and d backward calls into ONE
ATen graph for a fixed number d of targets given as weight tensors, which `torch.compile(fullgraph=True)` takes whole.

    engine = JointRelevance(RelevanceGraph(gm))      # or Explainer(model, compile="graph")
    step = engine.forward(x, engine.reference(x0))   # a relprop.engine.Pass, as in eager
    rel = step.backward(weights)

Any failure to trace or run the graphs warns once and falls back to the eager engine for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx

from .compiled import EngineFront, channel_dim, pure_graph
from .engine import Pass, References, Relevance, RelevanceGraph, secant_eps
from .errors import RelpropError


def clean(gm: fx.GraphModule) -> fx.GraphModule:
    """Dead-code elimination and common-subexpression elimination of an ATen graph (returns the cleaned module).

    CSE is only sound on a functional graph (merging two equal values one of which is later written in place would
    let the other see the write): in-place ops on fresh temporaries are made out-of-place first, and a graph with any
    other mutation is left without CSE."""
    from torch.fx.passes.dialect.common.cse_pass import CSEPass

    gm.graph.eliminate_dead_code()
    if _functionalize(gm.graph):
        result = CSEPass()(gm)
        if result.modified:
            gm = result.graph_module
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _functionalize(graph: fx.Graph) -> bool:
    """Rewrite each in-place ATen op `a.op_(...)` whose `a` is a fresh (non-view) result into `b = op(a, ...)`, the
    later uses of `a` reading `b`; False (graph unchanged from the first refusal on) when some mutation is not of
    that kind (a view, an input, an op without an out-of-place twin)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        schema = target._schema
        if not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
            continue
        first = node.args[0] if node.args else None
        written = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        name = schema.name.split("::")[-1]
        functional = getattr(torch.ops.aten, name[:-1], None) if name.endswith("_") else None
        if (len(written) != 1 or schema.arguments[0] is not written[0] or functional is None
                or not hasattr(functional, schema.overload_name or "default")
                or not isinstance(first, fx.Node) or first.op != "call_function"
                or not isinstance(first.target, torch._ops.OpOverload) or first.target.is_view):
            return False
        node.target = getattr(functional, schema.overload_name or "default")
        for user in list(first.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(first, node)
    return True


def aten_ops(gm: fx.GraphModule) -> int:
    """The ATen ops one run of `gm` dispatches: its call_function nodes (getitem of a multi-output op excluded)."""
    import operator

    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target is not operator.getitem)


@dataclass
class JointGraphs:
    """The forward and backward graphs of one layout, and how to call them."""

    forward: Callable          # (x, *saved, *sinks) -> (*outputs, *residuals)
    backward: Callable         # (*residuals, *cotangents) -> (∂/∂x, *∂/∂sinks)
    layout: list[tuple]        # (name, position) of each saved tensor, as `pure_graph` orders them
    n_outputs: int
    sink_shapes: list[tuple]
    forward_gm: fx.GraphModule
    backward_gm: fx.GraphModule


def trace_joint(engine: RelevanceGraph, x: torch.Tensor, refs: References) -> JointGraphs:
    """Trace the joint forward and backward of `engine`'s explain mode for x's and refs' shapes (see the module
    docstring), split it into a forward and a backward ATen graph, and clean both."""
    from torch._functorch.partitioners import default_partition
    from torch.fx.experimental.proxy_tensor import make_fx

    gm, layout = pure_graph(engine, refs, secant_eps(x.dtype))
    saved = [refs.saved[name][i] for name, i in layout]
    sinks = [torch.zeros(x.shape[0], refs.saved[f"tap:{i}"][0].shape[channel_dim(engine, i)], dtype=x.dtype,
                         device=x.device) for i in range(len(engine.tap_keys))]
    n_saved, n_sinks = len(saved), len(sinks)
    n_out = len(refs.outputs)
    tangents = [torch.zeros(x.shape[0], *o.shape[1:], dtype=o.dtype, device=o.device) for o in refs.outputs]

    def joint(primals: list[torch.Tensor], cotangents: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        xs, saved_, sinks_ = primals[0], primals[1:1 + n_saved], primals[1 + n_saved:]
        with torch.enable_grad():
            out = gm(xs, *saved_, *sinks_)
            out = tuple(out) if engine.outputs_are_tuple else (out,)
            grads = torch.autograd.grad(out, [xs, *sinks_], cotangents, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, [xs, *sinks_])]
        return (*out, *grads)

    primals = [x.detach().requires_grad_(True), *saved, *[s.detach().requires_grad_(True) for s in sinks]]
    joint_gm = make_fx(joint, tracing_mode="fake", _allow_non_fake_inputs=True)(primals, tangents)
    _name_inputs(joint_gm, 1 + n_saved + n_sinks, n_out)
    forward_gm, backward_gm = default_partition(joint_gm, None, num_fwd_outputs=n_out)
    forward_gm, backward_gm = clean(forward_gm), clean(backward_gm)
    return JointGraphs(forward_gm, backward_gm, layout, n_out, [tuple(s.shape) for s in sinks], forward_gm,
                       backward_gm)


def _name_inputs(gm: fx.GraphModule, n_primals: int, n_outputs: int) -> None:
    """Mark the joint graph as the partitioner expects: inputs named primals_*, then tangents_*, and the ancestors of
    the forward outputs tagged as forward."""
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        node.target = node.name = f"primals_{i + 1}" if i < n_primals else f"tangents_{i - n_primals + 1}"
    output = next(n for n in gm.graph.nodes if n.op == "output")
    todo = [a for a in output.args[0][:n_outputs] if isinstance(a, fx.Node)]
    seen: set[fx.Node] = set()
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        node.meta["partitioner_tag"] = "is_forward"
        todo.extend(node.all_input_nodes)
    gm.recompile()


class JointPass(Pass):
    """A `Pass` whose forward ran as the joint forward graph and whose backward runs the backward graph once per
    target (the target's cotangents on the outputs: its weights, or for a target function a small autograd pass over
    that function alone)."""

    def __init__(self, graph: RelevanceGraph, x: torch.Tensor, refs: References, outputs: tuple[torch.Tensor, ...],
                 residuals: list[torch.Tensor], joint: JointGraphs):
        live = tuple(o.detach().requires_grad_(True) for o in outputs)
        super().__init__(graph, x, refs, live, [])
        self._residuals, self._joint = residuals, joint
        self._weights: torch.Tensor | None = None  # the targets, when they are weights (see backward)

    def backward(self, targets: Any, *, chunk: int = 1) -> Relevance:
        """As `Pass.backward`; weight targets seed the backward graph directly (no autograd over the targets)."""
        self._weights = targets if isinstance(targets, torch.Tensor) else None
        return super().backward(targets, chunk=chunk)

    def _cotangents(self, t: torch.Tensor, d: int) -> list[torch.Tensor]:
        """The cotangents of the outputs for target d: its weights on the first output, else autograd over the
        target function alone (seeding target d of every example)."""
        live, w = self._live, self._weights
        if w is not None:
            w = w.to(dtype=live[0].dtype, device=live[0].device)
            w = w if w.dim() == live[0].dim() else w.unsqueeze(0)  # one target shaped like one example
            return [w[d].expand_as(live[0]), *[torch.zeros_like(o) for o in live[1:]]]
        seed = torch.zeros_like(t)
        seed[:, d] = 1
        cot = torch.autograd.grad(t, live, seed, retain_graph=d + 1 < t.shape[1], allow_unused=True)
        return [c if c is not None else torch.zeros_like(o) for c, o in zip(cot, live)]

    def _grads(self, t: torch.Tensor, inputs: list[torch.Tensor], chunk: int) -> list[torch.Tensor]:
        """(B, D, ...) multipliers of x and per-filter relevance for each target of t (B, D), one backward-graph call
        per target; `inputs` is [x] (backward) or [] (channel_relevance), `chunk` is ignored (no vmap needed); t (B,):
        one target, the gradients without the target dim."""
        if t.dim() == 1:
            return [g[:, 0] for g in self._grads(t.unsqueeze(1), inputs, chunk)]
        n = t.shape[1]
        per: list[list[torch.Tensor]] = []
        for d in range(n):
            cot = self._cotangents(t, d)
            grads = self._joint.backward(*self._residuals, *cot)
            per.append(list(grads) if inputs else list(grads[1:]))
        self._live = self._residuals = None
        return [torch.stack(parts, 1) for parts in zip(*per)]


class JointRelevance(EngineFront):
    """`RelevanceGraph`'s passes run as traced ATen graphs (see the module docstring), cached per input and reference
    layout.  `backend`: None runs the graphs as they are (no compiler); "aot_eager" or "inductor" hands each to
    `torch.compile(fullgraph=True)`.  Any failure warns once and falls back to the eager engine for good.
    """

    pass_name = "joint-graph"

    def __init__(self, engine: RelevanceGraph, *, backend: str | None = None,
                 compiler: Callable[..., Callable] | None = None):
        if backend not in (None, "aot_eager", "inductor", "eager"):
            raise RelpropError(f"unknown joint-graph backend {backend!r}; choose None, 'aot_eager', 'eager' or "
                               "'inductor'")
        self.engine, self.backend = engine, backend
        self.compiler = compiler or torch.compile
        self.failed: str | None = None
        self._graphs: dict[tuple, JointGraphs] = {}
        self._one: dict[tuple, tuple[fx.GraphModule, Callable]] = {}

    def relevance(self, x: torch.Tensor, refs: References, target: Any, *, chunk: int = 1) -> Relevance:
        """The relevance of `target`: for weight tensors on the first output, ONE graph call (`one_graph`); for a
        target function, the two phases (its cotangents need the outputs)."""
        if refs.batch in (1, x.shape[0]):
            refs = self.engine.at_batch(refs, x.shape[0])  # as in forward
        if isinstance(target, torch.Tensor) and self.failed is None:
            y = refs.outputs[0]
            single = tuple(target.shape) == tuple(y.shape[1:])
            weights = target.unsqueeze(0) if single else target
            if tuple(weights.shape[1:]) == tuple(y.shape[1:]):
                try:
                    rel = self._one_call(x, refs, weights.to(dtype=x.dtype, device=x.device))
                except RelpropError:
                    raise
                except Exception as e:  # noqa: BLE001 - see forward
                    self._give_up(e)
                else:
                    if single:
                        rel = Relevance(rel.attribution[:, 0], rel.score[:, 0], rel.reference_score[:, 0],
                                        rel.delta[:, 0], {k: v[:, 0] for k, v in rel.channels.items()}, rel.outputs)
                    return rel
        return self.forward(x, refs).backward(target, chunk=chunk)

    def one_graph(self, x: torch.Tensor, refs: References, n_targets: int) -> fx.GraphModule:
        """ONE ATen graph (x, x0, y0, *saved, weights (D, *one output example)) -> (outputs, attribution, score,
        reference score, delta, *per-filter relevance) for D = `n_targets` weight targets on the first output: the
        forward and D backward graphs traced together (cached per layout and D).  It runs as is, or whole under
        `torch.compile(fullgraph=True)`."""
        return self._one_graph(x, refs, n_targets)[0]

    def _one_graph(self, x: torch.Tensor, refs: References, n: int) -> tuple[fx.GraphModule, Callable]:
        from torch.fx.experimental.proxy_tensor import make_fx

        key = (tuple(x.shape), x.dtype, x.device, tuple(refs.input.shape), n)
        if key not in self._one:
            graphs = self.graphs(x, refs)
            fw, bw, n_out, sink_shapes = graphs.forward_gm, graphs.backward_gm, graphs.n_outputs, graphs.sink_shapes

            def one(x: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, *rest: torch.Tensor) -> tuple:
                saved, weights = rest[:-1], rest[-1]
                sinks = [torch.zeros(shape, dtype=x.dtype, device=x.device) for shape in sink_shapes]
                result = fw(x, *saved, *sinks)
                outputs, residuals = result[:n_out], result[n_out:]
                zeros = [torch.zeros_like(o) for o in outputs[1:]]
                per = [bw(*residuals, weights[d].expand_as(outputs[0]), *zeros) for d in range(n)]
                mult = torch.stack([p[0] for p in per], 1)
                attribution = mult * (x - x0).unsqueeze(1)
                w = weights.flatten(1).T
                score, reference_score = outputs[0].flatten(1) @ w, (y0.flatten(1) @ w).expand(x.shape[0], n)
                delta = attribution.flatten(2).sum(-1) - (score - reference_score)
                channels = [torch.stack([p[1 + i] for p in per], 1) for i in range(len(sink_shapes))]
                return (*outputs, attribution, score, reference_score, delta, *channels)

            saved = [refs.saved[name][i] for name, i in graphs.layout]
            weights = torch.zeros(n, *refs.outputs[0].shape[1:], dtype=x.dtype, device=x.device)
            with torch.no_grad():
                gm = clean(make_fx(one, tracing_mode="fake", _allow_non_fake_inputs=True)(
                    x.detach(), refs.input, refs.outputs[0], *saved, weights))
            fn = gm if self.backend is None else self.compiler(gm, fullgraph=True, backend=self.backend,
                                                                dynamic=False)
            self._one[key] = (gm, fn)
        return self._one[key]

    def _one_call(self, x: torch.Tensor, refs: References, weights: torch.Tensor) -> Relevance:
        graphs = self.graphs(x, refs)
        fn = self._one_graph(x, refs, weights.shape[0])[1]
        saved = [refs.saved[name][i] for name, i in graphs.layout]
        with torch.no_grad():
            result = fn(x.detach(), refs.input, refs.outputs[0], *saved, weights)
        n = graphs.n_outputs
        outputs, (attribution, score, reference_score, delta), sinks = result[:n], result[n:n + 4], result[n + 4:]
        channels: dict[str, torch.Tensor] = {}
        for key, value in zip(self.engine.tap_keys, sinks):
            channels[key] = channels[key] + value if key in channels else value
        return Relevance(attribution, score, reference_score, delta, channels, tuple(outputs))

    def graphs(self, x: torch.Tensor, refs: References) -> JointGraphs:
        """The (cached) forward and backward graphs for x's and refs' layout."""
        key = (tuple(x.shape), x.dtype, x.device, tuple(refs.input.shape))
        if key not in self._graphs:
            graphs = trace_joint(self.engine, x, refs)
            if self.backend is not None:
                graphs.forward = self.compiler(graphs.forward_gm, fullgraph=True, backend=self.backend, dynamic=False)
                graphs.backward = self.compiler(graphs.backward_gm, fullgraph=True, backend=self.backend,
                                                dynamic=False)
            self._graphs[key] = graphs
        return self._graphs[key]


    def _forward(self, x: torch.Tensor, refs: References) -> Pass:
        graphs = self.graphs(x, refs)
        x = x.detach()
        saved = [refs.saved[name][i] for name, i in graphs.layout]
        sinks = [torch.zeros(shape, dtype=x.dtype, device=x.device) for shape in graphs.sink_shapes]
        with torch.no_grad():
            result = graphs.forward(x, *saved, *sinks)
        outputs, residuals = tuple(result[:graphs.n_outputs]), list(result[graphs.n_outputs:])
        return JointPass(self.engine, x, refs, outputs, residuals, graphs)

"""A compiled relevance pass: the rule graph's forward (and so, through AOTAutograd, its backward) under
`torch.compile(fullgraph=True)`, with an optional CUDA-graph capture, falling back to eager with one warning.

The eager `RelevanceGraph` keeps per-call Python state (its tape: mode, the reference's saved tensors, the sinks).
Here the explain mode is rebuilt as a pure function of tensors: a copy of the rewritten fx graph whose rule nodes
call `Bound.explain` with the reference's saved tensors as graph inputs, and whose taps take their sink as an input.
Dynamo traces it, and every rule's autograd Function, without a graph break; the backward of each Function becomes
part of the compiled backward graph.  `relevance` compiles forward and backward together for a fixed number of
targets (the function the CUDA-graph path captures).

    engine = compile_relevance(RelevanceGraph(gm))          # or Explainer(model, compile=True)
    step = engine.forward(x, engine.reference(x0))          # a relprop.engine.Pass, as in eager
    rel = step.backward(weights)

Compiling costs seconds to minutes on the first call for each input shape; the compiled pass is cached per
`CompiledRelevance` (one per Explainer) and input / reference shape.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import fx

from .engine import PLAIN, Pass, References, Relevance, RelevanceGraph, RuleCall, TapCall, TapFn, secant_eps
from .errors import RelpropError

BACKENDS = ("inductor", "aot_eager", "eager")


class _Explain:
    """A rule node of the pure graph: `bound.explain(args, kwargs, saved, eps)`, the first `n_args` positional
    arguments being the op's and the rest the reference's saved values."""

    def __init__(self, call: RuleCall, n_args: int, eps: float):
        self.bound, self.n_args, self.eps = call.bound, n_args, eps
        self.__name__ = self.__qualname__ = call.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.bound.explain(args[:self.n_args], kwargs, args[self.n_args:], self.eps)


def _tap(y: torch.Tensor, y0: torch.Tensor, sink: torch.Tensor, channel_dim: int) -> torch.Tensor:
    return TapFn.apply(y, y0, sink, channel_dim)


def pure_graph(engine: RelevanceGraph, refs: References, eps: float) -> tuple[fx.GraphModule, list[tuple]]:
    """The explain mode of `engine` as a GraphModule of (x, *saved tensors, *sinks) and the layout of its inputs:
    one (name, position) per saved tensor, in order.  Saved values that are not tensors (None) become constants."""
    graph = fx.Graph()
    value_map: dict[fx.Node, fx.Node] = {}
    old = engine.module.graph
    x = None
    saved_inputs: list[tuple[str, int]] = []
    placeholders: dict[tuple[str, int], fx.Node] = {}
    for node in old.nodes:
        if node.op == "placeholder":
            if x is not None:
                raise RelpropError("the compiled pass supports graphs with one input")
            x = value_map[node] = graph.placeholder("x")

    def saved(name: str) -> list:
        values = refs.saved[name]
        out = []
        for i, v in enumerate(values):
            if isinstance(v, torch.Tensor):
                if (name, i) not in placeholders:
                    placeholders[(name, i)] = graph.placeholder(f"saved_{len(saved_inputs)}")
                    saved_inputs.append((name, i))
                out.append(placeholders[(name, i)])
            else:
                out.append(v)
        return out

    # placeholders first (fx wants them in front): one per saved tensor, then one sink per tap
    for node in old.nodes:
        if isinstance(node.target, RuleCall):
            saved(node.target.bound.name)
        elif isinstance(node.target, TapCall):
            saved(node.target.key)
    sinks = [graph.placeholder(f"sink_{i}") for i in range(len(engine.tap_keys))]
    for node in old.nodes:
        if node.op == "placeholder":
            continue
        if isinstance(node.target, RuleCall):
            args = fx.map_arg(node.args, lambda n: value_map[n])
            kwargs = fx.map_arg(node.kwargs, lambda n: value_map[n])
            new = graph.call_function(_Explain(node.target, len(args), eps),
                                      (*args, *saved(node.target.bound.name)), kwargs)
        elif isinstance(node.target, TapCall):
            t = node.target
            y0 = saved(t.key)[0]
            new = graph.call_function(_tap, (value_map[node.args[0]], y0, sinks[t.index], t.channel_dim))
        else:
            new = graph.node_copy(node, lambda n: value_map[n])
        value_map[node] = new
    graph.lint()
    return fx.GraphModule(engine.module, graph, class_name="PureRelevanceModule"), saved_inputs


class EngineFront:
    """What a faster pass shows of the RelevanceGraph `engine` it wraps: the plain forward, the reference pass and,
    by delegation, the rest of its surface (module, tap_keys, bound, ...), so an Explainer takes either."""

    engine: RelevanceGraph
    failed: str | None  # why the faster pass was given up, once it was
    pass_name = "faster"  # named in the fallback warning

    def forward(self, x: torch.Tensor, refs: References) -> Pass:
        """Phase one through the faster pass (`_forward`): as `RelevanceGraph.forward` (same Pass, same results to
        rounding); any failure other than ours warns once and explains eagerly from then on."""
        if refs.batch not in (1, x.shape[0]):
            raise RelpropError(f"reference batch {refs.batch} must be 1 or the input batch {x.shape[0]}")
        refs = self.engine.at_batch(refs, x.shape[0])  # a graph folding the batch needs the reference at x's batch
        if self.failed is None:
            try:
                return self._forward(x, refs)
            except RelpropError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever tracing or the compiler raises, explaining goes on
                self._give_up(e)
        return self.engine.forward(x, refs)

    def _forward(self, x: torch.Tensor, refs: References) -> Pass:
        raise NotImplementedError

    def _give_up(self, e: Exception) -> None:
        self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        warnings.warn(f"relprop: the {self.pass_name} relevance pass is not available here ({self.failed}); "
                      "explaining eagerly from now on (compile=False hides this warning)", RuntimeWarning,
                      stacklevel=3)

    def __getattr__(self, name: str) -> Any:
        if name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.engine(x)

    def reference(self, x0: torch.Tensor) -> References:
        return self.engine.reference(x0)


class CompiledRelevance(EngineFront):
    """`RelevanceGraph`'s passes with the explain forward compiled (see the module docstring).

    `backend`, `mode`: those of `torch.compile` (`mode="reduce-overhead"` captures CUDA graphs on CUDA).  Any
    failure to compile or to run the compiled pass (no C++ toolchain, an unsupported device, a Dynamo limit) warns
    once and falls back to the eager engine for good: an explanation never fails because of the compiler.
    """

    pass_name = "compiled"

    def __init__(self, engine: RelevanceGraph, *, backend: str = "inductor", mode: str | None = None,
                 compiler: Callable[..., Callable] | None = None):
        if backend not in BACKENDS:
            raise RelpropError(f"unknown compile backend {backend!r}; choose one of {BACKENDS}")
        self.engine, self.backend, self.mode = engine, backend, mode
        self.compiler = compiler or torch.compile
        self.failed: str | None = None  # why compiling was given up, once it was
        self._compiled: dict[tuple, tuple[Callable, list[tuple]]] = {}

    def relevance(self, x: torch.Tensor, refs: References, target: Any, *, chunk: int = 1) -> Relevance:
        return self.forward(x, refs).backward(target, chunk=chunk)

    def _key(self, x: torch.Tensor, refs: References) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, tuple(refs.input.shape))

    def _build(self, x: torch.Tensor, refs: References) -> tuple[Callable, list[tuple]]:
        key = self._key(x, refs)
        if key not in self._compiled:
            gm, layout = pure_graph(self.engine, refs, secant_eps(x.dtype))
            fn = self.compiler(gm, fullgraph=True, backend=self.backend, mode=self.mode, dynamic=False)
            self._compiled[key] = (fn, layout)
            try:  # a trial forward and two-target backward: a compiler failure shows here, not in Pass.backward
                self._run(fn, layout, x, refs).backward(lambda out: out[0].flatten(1)[:, :2])
            except BaseException:
                del self._compiled[key]
                raise
        return self._compiled[key]


    def _forward(self, x: torch.Tensor, refs: References) -> Pass:
        if refs.batch not in (1, x.shape[0]):
            raise RelpropError(f"reference batch {refs.batch} must be 1 or the input batch {x.shape[0]}")
        if self.engine._tape.mode != PLAIN:
            raise RelpropError("this RelevanceGraph is already running a pass (it is not re-entrant)")
        return self._run(*self._build(x, refs), x, refs)

    def _run(self, fn: Callable, layout: list[tuple], x: torch.Tensor, refs: References) -> Pass:
        x = x.detach().requires_grad_(True)
        saved = [refs.saved[name][i] for name, i in layout]
        sinks = [torch.zeros(x.shape[0], refs.saved[f"tap:{i}"][0].shape[channel_dim(self.engine, i)],
                             dtype=x.dtype, device=x.device, requires_grad=True) for i in range(len(self.tap_keys))]
        # no donated buffers: Pass.backward retains the graph between targets
        with torch.enable_grad(), torch._functorch.config.patch(donated_buffer=False):
            out = fn(x, *saved, *sinks)
        outputs = tuple(out) if self.engine.outputs_are_tuple else (out,)
        if self.mode == "reduce-overhead":  # CUDA-graph outputs are overwritten by the next replay: keep copies
            outputs = tuple(o.clone() for o in outputs)
        return Pass(self.engine, x, refs, outputs, sinks)


def channel_dim(engine: RelevanceGraph, index: int) -> int:
    """The channel dim of tap `index` (1, or -1 for a linear layer)."""
    for node in engine.module.graph.nodes:
        if isinstance(node.target, TapCall) and node.target.index == index:
            return node.target.channel_dim
    raise RelpropError(f"no tap {index} in this graph")


def compile_by_default(device: str | torch.device) -> bool:
    """Whether an Explainer compiles its relevance pass when not told (`compile=None`): never, for now.

    Decided on what one user session costs, the first call's compile included:
    CPU: eager.  Measured on a loaded 2-core machine (tests/test_compiled.py, float64, 64 px): compiling took 45 s
    for yolov8n and 90 s for yolo11n with aot_eager, and inductor had not finished yolov8n after 11 minutes, while an
    eager box costs well under a second there, so compiling would pay only after thousands of boxes of one size.
    CUDA (an H200, torch 2.11, 640 px, benchmarks/results/gpu/h200_suite.md): per box, inductor with CUDA-graph
    capture (`compile="cudagraph"`) is the fastest pass (YOLOv8s 30 ms against 69 ms eager, 47 ms traced graphs,
    51 ms plain inductor; YOLO11s 59 / 92 ms; YOLO26n 37 / 74 ms), but its first call compiles for 25-55 s, which
    pays back only after about 600-1,500 boxes of one size.  Eager stays the default so that one box costs
    milliseconds, and `compile="cudagraph"` (`--cudagraph`) is the choice for a GPU session of thousands of boxes.
    `compile="graph"` (`relprop.joint`, traced ATen graphs, no compiler) is opt-in too: on the same loaded CPU it
    traced in 10-15 s and took one box's pass from 1.68-1.83x to 1.45-1.55x a gradient at 64 px and from 1.45-1.57x
    to 1.35-1.57x at 640 px (two runs, benchmarks/results/joint_speed_*.json): too little and too noisy for a default;
    on the H200 it took YOLOv8s's box from 69 to 47 ms.
    """
    return False


def compile_relevance(engine: RelevanceGraph, *, backend: str = "inductor", mode: str | None = None) -> CompiledRelevance:
    """`engine` with its relevance pass compiled (see `CompiledRelevance`)."""
    return CompiledRelevance(engine, backend=backend, mode=mode)

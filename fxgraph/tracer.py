"""Trace a module into one flat torch.fx graph of ATen ops, with every node annotated.

Why torch.export and not `torch.fx.symbolic_trace`: YOLOv8's C2f iterates over `chunk(...)` (a Proxy cannot
be iterated), and Detect branches on the feature-map shapes to build its anchors; symbolic tracing fails on
both.  torch.export (non-strict) runs the real Python code on fake tensors, so shape branches are resolved at
trace time and the result is an fx graph flattened down to ATen ops, with `nn_module_stack` metadata naming the
module each op came from.  The batch dimension is exported as dynamic, so one graph serves any batch size
(relevance runs the input and its references as one batch).  Everything that does not depend on the input's
values (Detect's anchor grid and strides) is folded into constant buffers after export, so the graph holds only
the ops that later stages reason about.
"""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any, Sequence

import torch
from torch import fx, nn

from . import ops
from .errors import FxGraphError, UnsupportedOpError
from .nodeinfo import NodeInfo, info, set_info, update

aten = torch.ops.aten

# Ops whose listed positional argument is used only for its dtype, device or shape, never its values: a node is
# input-independent (hence foldable) when all its *other* tensor arguments are.
_META_ONLY_ARGS: dict[object, tuple[int, ...]] = {
    aten.type_as: (1,),
    aten.new_full: (0,),
    aten.new_zeros: (0,),
    aten.new_ones: (0,),
    aten.new_empty: (0,),
    aten.zeros_like: (0,),
    aten.ones_like: (0,),
    aten.empty_like: (0,),
    aten.full_like: (0,),
    aten.sym_size: (0,),
}
CONST_PREFIX = "_const_"  # buffers holding folded input-independent values (anchors, strides)
_LAYER_RE = re.compile(r"^model\.(\d+)(?:\.|$)")


def export_graph(module: nn.Module, example: torch.Tensor, dynamic_batch: bool = True) -> fx.GraphModule:
    """Export `module(example)` to a flat ATen GraphModule whose output is always a tuple of tensors."""
    dynamic_shapes = None
    if dynamic_batch:
        if example.shape[0] < 2:  # a size-1 dimension would be specialised; export with 2 and allow any
            example = example.expand(2, *example.shape[1:]).contiguous()
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},)
    try:
        with warnings.catch_warnings():  # Detect caches its anchors as plain attributes; we fold them anyway
            warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned during export")
            ep = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:
        raise FxGraphError(
            f"torch.export could not trace {type(module).__name__} ({type(exc).__name__}: {str(exc)[:500]})"
        ) from exc
    gm = ep.module()
    graph = gm.graph
    graph._codegen = fx.graph.CodeGen()  # plain positional forward(x) -> tuple, no pytree wrapping
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    out = next(n for n in graph.nodes if n.op == "output")
    result = out.args[0]
    if isinstance(result, fx.Node):
        result = (result,)
    out.args = (tuple(_flatten_outputs(result)),)
    new = fx.GraphModule(gm, graph, class_name="FlatGraphModule")
    if hasattr(new, "_guards_fn"):
        delattr(new, "_guards_fn")
    return new


def _flatten_outputs(value: Any) -> list[fx.Node]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _flatten_outputs(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _flatten_outputs(v)]
    raise FxGraphError(f"unexpected output element {value!r} in the exported graph")


def fold_constants(gm: fx.GraphModule, example: torch.Tensor) -> fx.GraphModule:
    """Replace every subgraph that does not depend on the input's values by a buffer holding its result."""
    graph = gm.graph
    dependent: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            dependent.add(node)
        elif node.op == "call_function":
            skip = _META_ONLY_ARGS.get(getattr(node.target, "overloadpacket", None), ())
            inputs = [a for i, a in enumerate(node.args) if i not in skip]
            if node.target is aten.sym_size.int or _depends(inputs, dependent) or _depends(node.kwargs, dependent):
                dependent.add(node)
    foldable = [
        n for n in graph.nodes
        if n.op == "call_function" and n not in dependent and any(u in dependent for u in n.users)
    ]
    if not foldable:
        return gm
    values = _evaluate(gm, example, set(foldable))
    for i, node in enumerate(foldable):
        value = values[node]
        if not isinstance(value, torch.Tensor):
            continue  # a Python scalar argument stays inlined by the op that produced it
        name = f"{CONST_PREFIX}{i}"
        gm.register_buffer(name, value.detach().clone())
        with graph.inserting_before(node):
            const = graph.get_attr(name)
        const.meta.update(node.meta)
        const.meta["val"] = value
        node.replace_all_uses_with(const)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _depends(args: Any, dependent: set[fx.Node]) -> bool:
    found = False

    def visit(a: fx.Node) -> fx.Node:
        nonlocal found
        found = found or a in dependent
        return a

    fx.node.map_arg(args, visit)
    return found


def _evaluate(gm: fx.GraphModule, example: torch.Tensor, wanted: set[fx.Node]) -> dict[fx.Node, Any]:
    """The values of the `wanted` nodes: only their ancestors are computed when none of these reads the input (a
    whole forward pass, on shapes no kernel has seen yet, costs seconds); else the graph is run once."""
    needed: set[fx.Node] = set()
    stack = list(wanted)
    while stack:
        node = stack.pop()
        if node not in needed:
            needed.add(node)
            stack.extend(node.all_input_nodes)
    if all(n.op in ("get_attr", "call_function") for n in needed):
        env: dict[fx.Node, Any] = {}
        with torch.no_grad():
            for node in gm.graph.nodes:  # topological order
                if node not in needed:
                    continue
                if node.op == "get_attr":
                    env[node] = functools.reduce(getattr, node.target.split("."), gm)
                else:
                    args, kwargs = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
                    env[node] = node.target(*args, **kwargs)
        return {n: env[n] for n in wanted}
    kept: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            result = super().run_node(n)
            if n in wanted:
                kept[n] = result
            return result

    with torch.no_grad():
        Recorder(gm).run(example)
    return kept


def annotate(gm: fx.GraphModule, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Give every node its NodeInfo (fxgraph.nodeinfo): kind, module_path, module_type, layer, shape, channels.

    Shapes come from the export's fake values where present, else from one run on `example`.
    """
    missing = [n for n in gm.graph.nodes if n.op != "output" and "val" not in n.meta]
    if missing and example is not None:
        torch.fx.passes.shape_prop.ShapeProp(gm).propagate(example)
    for node in gm.graph.nodes:
        meta = node.meta
        param = None
        if node.op == "placeholder":
            kind, path, mtype = ops.INPUT, "", "input"
        elif node.op == "output":
            kind, path, mtype = ops.OUTPUT, "", "output"
        elif node.op == "get_attr":
            is_param = not node.target.startswith(CONST_PREFIX)  # model state: parameters and running stats
            kind = ops.PARAM if is_param else ops.CONST
            path = node.target.rsplit(".", 1)[0] if is_param else _stack_path(meta)[0]
            mtype = "constant"  # a parameter takes its module's type from its consumer, below
            if is_param:
                param = node.target
        elif node.op == "call_function":
            kind = ops.kind_of_target(node.target)
            if kind is None and node.target in ops.SIZE_OPERATORS and _is_size(meta):
                kind = ops.SIZE
            path, mtype = _stack_path(meta)
            if kind is None:
                where = f" in {path} ({mtype})" if path else ""
                raise UnsupportedOpError(
                    f"op {node.target}{where} is not supported: no relevance rule or pruning rule knows it. "
                    "Supported models are ultralytics YOLOv5u, v8, v9, v10, 11, 12 and 26 detectors, segmenters, "
                    "pose, OBB and classification models (YOLO11's C2PSA and YOLO12's area attention included)."
                )
        else:
            raise UnsupportedOpError(f"node {node.name} ({node.op} {node.target}) is not supported in a flat graph")
        match = _LAYER_RE.match(path)
        shape = _shape_of(meta)
        tensor_like = kind not in (ops.PARAM, ops.CONST)
        set_info(node, NodeInfo(
            kind=kind,
            layer=int(match.group(1)) if match else None,
            module_path=path,
            module_type=mtype,
            shape=shape,
            channels=shape[1] if tensor_like and shape is not None and len(shape) >= 2 else None,
            param=param,
        ))
    for node in gm.graph.nodes:
        if info(node).kind == ops.PARAM and node.users:
            update(node, module_type=info(next(iter(node.users))).module_type)
    return gm


def _is_size(meta: dict) -> bool:
    """The node computes a Python int or a symbolic int (a size), not a tensor."""
    return isinstance(meta.get("val"), (int, torch.SymInt)) and not isinstance(meta.get("val"), bool)


def _stack_path(meta: dict) -> tuple[str, str]:
    stack = meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, mtype = list(stack.values())[-1]
    return path, str(mtype).rsplit(".", 1)[-1].rstrip("'>")


def _shape_of(meta: dict) -> tuple[int | None, ...] | None:
    val = meta.get("val", meta.get("tensor_meta"))
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in shape)


def trace_module(module: nn.Module, example: torch.Tensor, dynamic_batch: bool = True) -> fx.GraphModule:
    """Generic entry: any module made of supported ops -> a flat GraphModule whose every node has its NodeInfo
    (no roles: those need a model that says what its outputs are, see fxgraph.trace)."""
    module = module.eval()
    inplace = [m for m in module.modules() if getattr(m, "inplace", False) is True]
    for m in inplace:  # in-place activations would export as mutating ops (silu_); trace the functional form
        m.inplace = False
    try:
        gm = export_graph(module, example, dynamic_batch=dynamic_batch)
    finally:
        for m in inplace:
            m.inplace = True
    gm = fold_constants(gm, example)
    gm = annotate(gm, example)
    gm.graph.lint()
    gm.recompile()
    return gm


def data_args(node: fx.Node) -> Sequence[fx.Node]:
    """The tensor nodes a node computes from (parameters and constants excluded), in argument order."""
    found: list[fx.Node] = []

    def visit(a: fx.Node) -> fx.Node:
        if info(a).kind not in ops.NON_DATA:
            found.append(a)
        return a

    fx.node.map_arg((node.args, node.kwargs), visit)
    return found

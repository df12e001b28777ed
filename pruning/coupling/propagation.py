"""Channel propagation: one pass over the fx graph in topological order gives every value's channel dimension
(dim 1) its labels, one per channel, the way torch.fx's `ShapeProp` gives every node its shape.

`Propagation.run_node(node)` dispatches on the node's op kind (its NodeInfo) to one handler per kind, each taking
the node and reading and writing the pass's state (labels so far, split constraints, attention heads found).  A
subclass may override a handler by its name in `HANDLERS`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, ClassVar, Iterable

import networkx as nx
import torch
from torch import fx

import fxgraph
from fxgraph import info, ops

from .units import IN, NORM, OUT, STAT, HeadLayout, Touch

aten = torch.ops.aten

# Ops that act on each channel separately: output channel i comes from input channel i only.
PER_CHANNEL_KINDS = frozenset({"silu", "relu", "sigmoid", "identity", "upsample", "maxpool", "avgpool"})
# Elementwise ops of two operands: channels at the same position are tied.
BINARY_KINDS = frozenset({"add", "sub", "mul", "div"})


class ChannelLabels:
    """Channel labels: a networkx graph whose edges tie labels that must go together (its connected components
    are the units), with each label's touches, producer, pin reasons and split tags."""

    def __init__(self) -> None:
        self.ties = nx.Graph()
        self.touches: list[list[Touch]] = []
        self.source: list[tuple[str, int] | None] = []
        self.pins: dict[int, list[str]] = defaultdict(list)
        self.tags: dict[int, set[tuple[str, int]]] = defaultdict(set)
        self._root: dict[int, int] = {}

    def new(self, source: tuple[str, int] | None = None, pin: str | None = None) -> int:
        label = len(self.touches)
        self.ties.add_node(label)
        self.touches.append([])
        self.source.append(source)
        if pin is not None:
            self.pins[label].append(pin)
        return label

    def fresh(self, n: int, pin: str) -> list[int]:
        return [self.new(pin=pin) for _ in range(n)]

    def union(self, a: int, b: int) -> None:
        if a != b:
            self.ties.add_edge(a, b)

    def pin(self, labels: Iterable[int], why: str) -> None:
        for label in labels:
            self.pins[label].append(why)

    def components(self) -> dict[int, list[int]]:
        """Root (smallest label) -> labels of each connected component; fixes `find` for later lookups."""
        out = {}
        for comp in nx.connected_components(self.ties):
            members = sorted(comp)
            out[members[0]] = members
            for label in members:
                self._root[label] = members[0]
        return out

    def find(self, label: int) -> int:
        return self._root[label]


# A tensor's channel labels: a list (one label per channel along dim 1), a tuple of lists for the parts of a
# split, or None when the value has no channel dimension we track.
Labels = list | tuple | None
Protect = Callable[[fx.Node], "str | None"]
Heads = Callable[[fx.Node], "HeadLayout | None"]


class Propagation:
    """The state of one pass (`labels`, each node's `values`, the split `constraints`, the attention heads
    `found`) and a handler per op kind that takes a node and returns its output's labels.

    `protect(node)` may give a reason to keep a filter op's outputs; `heads(node)` may describe a reshape as a
    multi-head split (`HeadLayout`).
    """

    HANDLERS: ClassVar[dict[str, str]] = {}  # op kind -> name of the handler method (filled below the class)

    def __init__(self, gm: fx.GraphModule, protect: Protect | None = None, heads: Heads | None = None) -> None:
        self.gm, self.protect, self.heads = gm, protect, heads
        self.labels = ChannelLabels()
        self.values: dict[fx.Node, Labels] = {}
        self.constraints: list[tuple[str, list[list[int]]]] = []  # (split node, its parts' labels)
        # reshape -> (layout, qkv weight, each head's q labels, each head's v labels when the layout cuts v)
        self.found: dict[str, tuple[HeadLayout, str | None, list[list[int]], list[list[int]]]] = {}
        # attention module path -> (its v labels in output-channel order, the spatial size of its qkv map)
        self.v_streams: dict[str, tuple[list[int], tuple]] = {}

    def run(self) -> "Propagation":
        """Label every data node of the graph, in order."""
        for node in self.gm.graph.nodes:
            if info(node).kind not in ops.NON_DATA:
                self.values[node] = self.run_node(node)
        return self

    def run_node(self, node: fx.Node) -> Labels:
        """The labels of `node`'s output, from its op kind's handler (`opaque` for a kind without one)."""
        kind = info(node).kind
        layout = self.heads(node) if self.heads is not None and kind == "reshape" else None
        if layout is not None:
            return self.attention_heads(node, layout)
        stream = self.v_streams.get(info(node).module_path or "")
        if stream is not None and kind == "permute" and _channels_first(node, *stream):
            return list(stream[0])
        return getattr(self, self.HANDLERS.get(kind, "opaque"))(node)

    def attention_heads(self, node: fx.Node, layout: HeadLayout) -> Labels:
        """A multi-head reshape (see HeadLayout): q_j and k_j of a head are one unit (attention constraint 2), each
        head's pairs a group, the heads a block losing equally many (constraint 3); v pinned (constraint 4), or,
        with `v_channels`, each head's v a group of the same block (one head_dim), whose labels the module's
        channels-first outputs carry on (`v_streams`)."""
        x = self.values.get(node.args[0])
        nh, kd, per = layout.num_heads, layout.key_dim, layout.per_head
        shape = info(node).shape
        heads_view = shape is not None and len(shape) == 4 and tuple(shape[1:3]) == (nh, per)
        flat_view = layout.v_channels and shape is not None and len(shape) >= 2 and shape[1] == nh * per
        if not isinstance(x, list) or len(x) != nh * per or not (heads_view or flat_view):
            return self.opaque(node)
        qs, vs = [], []
        for h in range(nh):
            start = h * per
            q, k, v = x[start : start + kd], x[start + kd : start + 2 * kd], x[start + 2 * kd : start + per]
            for a, b in zip(q, k):
                self.labels.union(a, b)
            for label in q + k:
                self.labels.tags[label].add((node.name, h))
            if layout.v_channels:
                for label in v:
                    self.labels.tags[label].add((node.name, nh + h))
                vs.append(v)
            else:
                self.labels.pin(v, f"attention constraint 4: v channels of {layout.module} map onto its input "
                                   "stream by view(B, C, H, W) (tied to pe, proj and the residual adds); only key "
                                   "dims are pruned")
            qs.append(q)
        producer = node.args[0]
        while info(producer).kind == "batchnorm":
            producer = producer.args[0]
        param = _param_name(producer.args[1]) if info(producer).kind == "conv" else None
        if param is not None and not layout.v_channels:  # the input fixes C of view(B, C, H, W): its width stays
            self.labels.pin(_flat(self.values.get(producer.args[0])),
                            f"attention constraint 4: the input stream of {layout.module} has as many channels as v "
                            "(view(B, C, H, W)); whole heads are not pruned by this version")
        spatial = info(node.args[0]).shape
        if vs and spatial is not None:
            self.v_streams[layout.module] = ([label for v in vs for label in v], tuple(spatial[2:]))
        self.found[node.name] = (layout, param, qs, vs)
        self.constraints.append((node.name, qs + vs))
        return self.fresh_for(node, f"comes from {_where(node)}")

    def fresh_for(self, node: fx.Node, why: str) -> Labels:
        shape = info(node).shape
        if shape is None or len(shape) < 2 or shape[1] is None:
            return None
        return self.labels.fresh(shape[1], why)

    def opaque(self, node: fx.Node) -> Labels:
        """An op whose channel semantics we do not know: pin what reaches it, and its output is unprunable."""
        why = f"reaches {_where(node)}"
        for arg in fxgraph.data_args(node):
            self.labels.pin(_flat(self.values.get(arg)), why)
        return self.fresh_for(node, f"comes from {_where(node)}")

    def graph_input(self, node: fx.Node) -> Labels:
        return self.fresh_for(node, "image channels (graph input)")

    def per_channel(self, node: fx.Node) -> Labels:
        args = fxgraph.data_args(node)
        if len(args) != 1 or not isinstance(self.values.get(args[0]), list):
            return self.opaque(node)
        return self.values[args[0]]

    def batchnorm(self, node: fx.Node) -> Labels:
        x = self.values.get(node.args[0])
        if not isinstance(x, list):
            return self.opaque(node)
        roles = ((1, NORM), (2, NORM), (3, STAT), (4, STAT))
        for position, role in roles:
            name = _param_name(node.args[position]) if len(node.args) > position else None
            if name is not None:
                for i, label in enumerate(x):
                    self.labels.touches[label].append(Touch(name, 0, i, role))
        return x

    def conv(self, node: fx.Node) -> Labels:
        x = self.values.get(node.args[0])
        weight = _param_name(node.args[1])
        bias = _param_name(node.args[2]) if len(node.args) > 2 else None
        groups, transposed = _conv_args(node)
        facts = info(node)
        out_channels = facts.shape[1]
        path = facts.module_path or node.name
        unnamed_bias = len(node.args) > 2 and node.args[2] is not None and bias is None
        if weight is None or not isinstance(x, list) or unnamed_bias:
            return self.opaque(node)
        in_dim, out_dim = (0, 1) if transposed else (1, 0)
        if groups == 1:
            for i, label in enumerate(x):
                self.labels.touches[label].append(Touch(weight, in_dim, i, IN))
            reason = self.protect(node) if self.protect is not None else None
            if reason is None and facts.is_head_output:
                reason = f"head output ({facts.output})"
            out = [self.labels.new(source=(path, i), pin=reason) for i in range(out_channels)]
        elif not transposed and groups == len(x) == out_channels:  # depthwise: channel i in, channel i out
            out = list(x)
        else:  # grouped conv: channels are tied within groups; not sliced by this version
            self.labels.pin(x, f"reaches grouped {_where(node)}")
            return self.fresh_for(node, f"comes from grouped {_where(node)}")
        for i, label in enumerate(out):
            self.labels.touches[label].append(Touch(weight, out_dim, i, OUT))
            if bias is not None:
                self.labels.touches[label].append(Touch(bias, 0, i, OUT))
        return out

    def linear(self, node: fx.Node) -> Labels:
        """A fully connected layer over (B, C) features (Classify's `linear`): input feature i is weight column i,
        output feature j is weight row j and bias j; a head output is protected like a head conv."""
        x = self.values.get(node.args[0])
        weight = _param_name(node.args[1])
        bias = _param_name(node.args[2]) if len(node.args) > 2 else None
        facts = info(node)
        unnamed_bias = len(node.args) > 2 and node.args[2] is not None and bias is None
        if weight is None or not isinstance(x, list) or unnamed_bias or facts.shape is None or len(facts.shape) != 2:
            return self.opaque(node)
        for i, label in enumerate(x):
            self.labels.touches[label].append(Touch(weight, 1, i, IN))
        reason = self.protect(node) if self.protect is not None else None
        if reason is None and facts.is_head_output:
            reason = f"head output ({facts.output})"
        path = facts.module_path or node.name
        out = [self.labels.new(source=(path, j), pin=reason) for j in range(facts.shape[1])]
        for j, label in enumerate(out):
            self.labels.touches[label].append(Touch(weight, 0, j, OUT))
            if bias is not None:
                self.labels.touches[label].append(Touch(bias, 0, j, OUT))
        return out

    def reshape(self, node: fx.Node) -> Labels:
        """`flatten(1)` of a (B, C, 1, ..., 1) map (Classify after its global pool) keeps channel i at feature i;
        any other reshape mixes channels with positions, so it pins what reaches it."""
        x = self.values.get(node.args[0])
        source_shape = info(node.args[0]).shape
        packet = getattr(node.target, "overloadpacket", None)
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if (packet is aten.flatten and isinstance(x, list) and source_shape is not None and len(source_shape) >= 2
                and start == 1 and end in (-1, len(source_shape) - 1) and all(d == 1 for d in source_shape[2:])):
            return x
        return self.opaque(node)

    def cat(self, node: fx.Node) -> Labels:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        parts = [self.values.get(t) for t in tensors]
        if not _channel_dim(node, dim) or not all(isinstance(p, list) for p in parts):
            return self.opaque(node)
        return [label for part in parts for label in part]

    def split(self, node: fx.Node) -> Labels:
        x = self.values.get(node.args[0])
        packet = getattr(node.target, "overloadpacket", None)
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        source_shape = info(node.args[0]).shape
        rank = len(source_shape) if source_shape is not None else 0
        if not isinstance(x, list) or (dim if dim >= 0 else dim + rank) != 1:
            return self.opaque(node)
        n = len(x)
        if packet is aten.chunk:
            chunks = int(node.args[1])
            size = -(-n // chunks)
            parts = [x[i : i + size] for i in range(0, n, size)]
            if n % chunks == 0:
                self.constraints.append((node.name, parts))  # chunk keeps its halves equal only if all lose the same
            else:
                self.labels.pin(x, f"reaches uneven {_where(node)}")
        elif packet in (aten.split_with_sizes, aten.split) and _equal_sizes(node.args[1], n):
            # split((c, c)) as C2PSA/PSA write it: the module recomputes its sizes from its `c` (resynced by
            # pruning.policy.sync_modules), so like chunk it only needs every part to lose the same count
            sizes = node.args[1]
            size = sizes if isinstance(sizes, int) else sizes[0]
            parts = [x[i : i + size] for i in range(0, n, size)]
            self.constraints.append((node.name, parts))
        else:  # unequal sizes are baked into the module's code, which surgery does not rewrite: pin
            return self.opaque(node)
        for k, part in enumerate(parts):
            for label in part:
                self.labels.tags[label].add((node.name, k))
        return tuple(parts)

    def getitem(self, node: fx.Node) -> Labels:
        source, index = node.args[0], node.args[1]
        value = self.values.get(source)
        if isinstance(value, tuple):
            return value[index]
        if info(source).kind == "batchnorm" and index == 0 and isinstance(value, list):
            return value  # _native_batch_norm_legit_no_training returns (out, mean, invstd)
        return self.opaque(node)

    def binary(self, node: fx.Node) -> Labels:
        tensors = fxgraph.data_args(node)
        others = [a for a in node.all_input_nodes if a not in tensors and info(a).kind != ops.SIZE]
        out_shape = info(node).shape
        out_rank = len(out_shape) if out_shape is not None else 0
        per_channel_other = any(_varies_on_channels(a, out_rank) for a in others)
        parts = [self.values.get(t) for t in tensors]
        if per_channel_other or not parts or not all(isinstance(p, list) for p in parts):
            return self.opaque(node)
        n = len(parts[0])
        if any(len(p) != n for p in parts):
            return self.opaque(node)
        for other in parts[1:]:
            for a, b in zip(parts[0], other):
                self.labels.union(a, b)
        return parts[0]

    def graph_output(self, node: fx.Node) -> Labels:
        for arg in node.all_input_nodes:
            self.labels.pin(_flat(self.values.get(arg)), f"is a model output ({arg.name})")
        return None


Propagation.HANDLERS.update({
    ops.INPUT: "graph_input",
    ops.OUTPUT: "graph_output",
    "conv": "conv",
    "conv_transpose": "conv",
    "linear": "linear",
    "reshape": "reshape",
    "batchnorm": "batchnorm",
    "cat": "cat",
    "split": "split",
    "getitem": "getitem",
    **{k: "per_channel" for k in PER_CHANNEL_KINDS},
    **{k: "binary" for k in BINARY_KINDS},
})


def _channels_first(node: fx.Node, labels: list[int], spatial: tuple) -> bool:
    """Whether `node` permutes a channels-last map reshaped to (B, *spatial, len(labels)) back to channels first:
    inside an attention whose v is cut (`v_streams`), such a map holds v's channels in head order (v itself, or
    the attention output, channel for channel), at the spatial size of the attention's qkv map."""
    args = node.args[1] if len(node.args) > 1 else None
    source = node.args[0]
    shape, before = info(node).shape, info(source).shape
    if (not isinstance(args, (list, tuple)) or info(source).kind != "reshape" or shape is None or before is None
            or len(shape) != len(spatial) + 2 or tuple(before[1:]) != (*spatial, len(labels))):
        return False
    dims = [int(d) % len(shape) for d in args]
    return dims == [0, len(shape) - 1, *range(1, len(shape) - 1)]


def _where(node: fx.Node) -> str:
    facts = info(node)
    path, mtype = facts.module_path or "", facts.module_type or ""
    return f"{facts.kind} {node.name}" + (f" in {path} ({mtype})" if path else "")


def _flat(value: Labels) -> list[int]:
    if value is None:
        return []
    if isinstance(value, tuple):
        return [x for part in value for x in part]
    return list(value)


def _param_name(arg) -> str | None:
    return info(arg).param if isinstance(arg, fx.Node) else None


def _conv_args(node: fx.Node) -> tuple[int, bool]:
    """(groups, transposed) of a conv-like ATen call."""
    args = node.args
    if getattr(node.target, "overloadpacket", None) is aten.convolution:
        return int(args[8]), bool(args[6])
    if info(node).kind == "conv_transpose":
        return (int(args[6]) if len(args) > 6 else 1), True
    return (int(args[6]) if len(args) > 6 else 1), False


def _channel_dim(node: fx.Node, dim: int) -> bool:
    shape = info(node).shape
    rank = len(shape) if shape is not None else None
    if dim < 0 and rank is not None:
        dim += rank
    return dim == 1


def _equal_sizes(sizes, n: int) -> bool:
    """Whether split sizes (an int or a list) cut `n` channels into equal parts."""
    if isinstance(sizes, int):
        return sizes > 0 and n % sizes == 0
    return isinstance(sizes, (list, tuple)) and len(set(sizes)) == 1 and sum(sizes) == n


def _varies_on_channels(node: fx.Node, out_rank: int) -> bool:
    """Whether a parameter or constant operand varies along the output's channel dimension (dim 1), so that
    cutting channels would need slicing it too."""
    shape = getattr(node.meta.get("val"), "shape", None) or info(node).shape  # val: the export's fake tensor
    if shape is None:
        return False
    position = len(shape) - (out_rank - 1)  # broadcasting aligns trailing dimensions
    return 0 <= position < len(shape) and shape[position] not in (1, None)

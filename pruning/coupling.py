"""Channel coupling: which channels of a flat graph must be removed together, and every tensor slice they touch.

One pass over the fx graph in topological order gives every tensor's channel dimension (dim 1) a list of
*labels*, one per channel.  A filter op (conv) creates fresh labels for its output channels; ops that act per
channel (BatchNorm, activations, pooling, upsampling) pass their input's labels on; `cat` along channels
concatenates them; `chunk`/`split` slices them; `add`/`sub`/`mul`/`div` of two tensors *unite* the labels of
their operands position by position (a residual shortcut ties the channels of both branches).  Each op that
holds a per-channel slice of a parameter records a `Touch` on the label of that channel: the producing conv
(weight dim 0, bias), the BatchNorm (affine and running statistics) and every consuming conv (weight dim 1).

Labels tied in a networkx graph form a *unit* (a connected component): channels that can only go together.  Units whose channels reach
an op we cannot slice (a reshape, the output, an image input...) are pinned.  Units with the same producers and
the same path through splits form a *group* (the channels of one layer, DepGraph's "group"); groups that sit on
the parts of one `chunk` form a *block* that must lose equally many channels, because `chunk(2)` in the block's
own forward code needs equal halves.

Attention: a reshape that a `heads` callback describes as multi-head (`HeadLayout`: num_heads blocks of
key_dim q, key_dim k and head_dim v channels, ultralytics's `Attention` qkv layout) ties q channel j to k channel j
of the same head (they are contracted together), tags each head's q/k pairs as their own group and makes the
heads' groups a block that loses equally many pairs (every head keeps one key_dim); v's channels are pinned, since
`view(B, C, H, W)` maps them onto the stream.  So attention is pruned by shrinking key_dim equally in every head.

Nothing here knows YOLO: what a node is comes from its NodeInfo (`fxgraph.info`); a filter op whose role is
`head_output` (set at trace time from the model) is protected, and a `protect` callback may add model-specific
protection or a more precise reason (see pruning.policy).
"""

from __future__ import annotations

import contextlib
import gc
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import networkx as nx
import torch
from torch import fx

import fxgraph
from fxgraph import info, ops

aten = torch.ops.aten

# Ops that act on each channel separately: output channel i comes from input channel i only.
PER_CHANNEL_KINDS = frozenset({"silu", "relu", "sigmoid", "identity", "upsample", "maxpool", "avgpool"})
# Elementwise ops of two operands: channels at the same position are tied.
BINARY_KINDS = frozenset({"add", "sub", "mul", "div"})

OUT, NORM, STAT, IN = "out", "norm", "stat", "in"  # roles of a touch: producer, BN affine, BN stats, consumer


class Touch(NamedTuple):
    """One slice of one parameter that belongs to a channel: `param[..., index, ...]` along `dim`.

    `role` says why: `out` (a filter and its bias), `norm` (BatchNorm weight/bias), `stat` (running
    statistics), `in` (a consumer's input slice).  Zeroing every `out` and `norm` touch of a unit makes the
    channel exactly zero after a BatchNorm, which is what the equivalence tests use.
    """

    param: str
    dim: int
    index: int
    role: str


@dataclass
class Unit:
    """Channels that must be removed together (one per producing filter) and all the slices they touch."""

    touches: tuple[Touch, ...]
    sources: tuple[tuple[str, int], ...]  # (producer module path, output channel index)
    pinned: tuple[str, ...] = ()  # why it cannot be removed (empty if it can)


@dataclass
class Group:
    """The units of one layer's channels that share producers and path: the granule of a pruning plan.

    `name` is the primary producer's module path, with the channel range when the group holds only part of
    its outputs (the two halves of a C2f's cv1: `model.2.cv1.conv[0:16]`, `model.2.cv1.conv[16:32]`).
    """

    name: str
    units: list[Unit]
    sources: tuple[str, ...]  # module paths of every producing filter op, primary first
    layer: int | None  # layer index of the primary producer
    layers: frozenset[int]  # layer indices of all producers
    protected: str | None = None  # reason it may not be cut, or None

    def __len__(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> bool:
        return self.protected is None

    def params(self) -> set[str]:
        """Names of every parameter or buffer that this group's removal changes."""
        return {t.param for u in self.units for t in u.touches}


class HeadLayout(NamedTuple):
    """How a reshape splits channels into heads: `num_heads` consecutive blocks of `key_dim` q, `key_dim` k and
    `head_dim` v channels (ultralytics `Attention`: qkv.view(B, num_heads, 2*key_dim + head_dim, N))."""

    num_heads: int
    key_dim: int
    head_dim: int
    module: str  # the attention module's path, for messages

    @property
    def per_head(self) -> int:
        return 2 * self.key_dim + self.head_dim


@dataclass
class HeadCut:
    """An attention reshape found by the analysis: its layout, the qkv weight it reads and the q/k group of each
    head (unit j of a head's group = its q channel j and k channel j)."""

    layout: HeadLayout
    param: str | None  # the producing conv's weight (qkv.conv.weight), whose dim 0 holds the q/k/v channels
    groups: tuple[str, ...]


@dataclass
class Coupling:
    """All channel groups of a graph and the blocks that must lose equally many channels."""

    groups: dict[str, Group]
    blocks: list[tuple[str, ...]] = field(default_factory=list)
    # why a block must lose equally many channels, when it is not a chunk's halves (attention heads)
    block_reasons: dict[tuple[str, ...], str] = field(default_factory=dict)
    # reshape node name -> the attention heads it splits
    heads: dict[str, HeadCut] = field(default_factory=dict)
    # node name -> for each channel of its output, the (group name, unit index) it belongs to, or None for a
    # channel no plan can remove; what lets surgery update shapes without re-running the graph.
    channels: dict[str, list[tuple[str, int] | None]] = field(default_factory=dict, repr=False)

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.prunable]

    def block_of(self, name: str) -> tuple[str, ...]:
        """The block holding group `name` (a 1-tuple for a group without a split constraint)."""
        for block in self.blocks:
            if name in block:
                return block
        return (name,)

    def all_blocks(self) -> list[tuple[str, ...]]:
        """Every group in exactly one block, in graph order."""
        seen: set[str] = set()
        out = []
        for name in self.groups:
            if name in seen:
                continue
            block = self.block_of(name)
            seen.update(block)
            out.append(block)
        return out

    def layers(self) -> set[int]:
        return {layer for g in self.groups.values() for layer in g.layers}

    def summary(self) -> str:
        """One line per group: name, size, state."""
        lines = []
        for g in self.groups.values():
            state = "prunable" if g.prunable else f"protected: {g.protected}"
            lines.append(f"{g.name:40s} {len(g):5d}  {state}")
        return "\n".join(lines)


class _Labels:
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


def analyze(
    graph: fxgraph.FlatGraph | fx.GraphModule,
    protect: Callable[[fx.Node], str | None] | None = None,
    heads: Callable[[fx.Node], HeadLayout | None] | None = None,
) -> Coupling:
    """Compute the channel groups of a flat graph.

    `protect(node)` may return a reason to keep a filter op's outputs (a model's output convs); filter ops whose
    NodeInfo role is `head_output`, and channels that reach an op whose channel semantics we do not know, are
    protected anyway.  `heads(node)` may describe a reshape as a multi-head split (`HeadLayout`); without it every
    reshape pins what reaches it.
    """
    gm = graph.module if isinstance(graph, fxgraph.FlatGraph) else graph
    with gc_paused():
        return _analyze(gm, protect, heads)


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector: the pass allocates ~10 small acyclic objects per channel, and
    collections triggered by them (which find nothing, refcounting frees these) would dominate its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _analyze(gm: fx.GraphModule, protect, heads) -> Coupling:
    labels = _Labels()
    values: dict[fx.Node, Labels] = {}
    constraints: list[tuple[str, list[list[int]]]] = []
    found: dict[str, tuple[HeadLayout, str | None, list[list[int]]]] = {}
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        kind = info(node).kind
        if kind in ops.NON_DATA:
            continue
        layout = heads(node) if heads is not None and kind == "reshape" else None
        if layout is not None:
            values[node] = _heads(node, values, labels, constraints, layout, found)
            continue
        handler = _HANDLERS.get(kind, _opaque)
        values[node] = handler(node, values, labels, constraints, protect)
    return _collect(labels, constraints, order, gm, values, found)


def _heads(node, values, labels, constraints, layout: HeadLayout, found) -> Labels:
    """A multi-head reshape (see HeadLayout): q_j and k_j of a head are one unit (attention constraint 2), each
    head's pairs a group, the heads a block losing equally many (constraint 3); v pinned (constraint 4)."""
    x = values.get(node.args[0])
    nh, kd, per = layout.num_heads, layout.key_dim, layout.per_head
    shape = info(node).shape
    if not isinstance(x, list) or len(x) != nh * per or shape is None or len(shape) != 4 or tuple(shape[1:3]) != (nh, per):
        return _opaque(node, values, labels, constraints, None)
    qs = []
    for h in range(nh):
        q, k, v = x[h * per : h * per + kd], x[h * per + kd : h * per + 2 * kd], x[h * per + 2 * kd : (h + 1) * per]
        for a, b in zip(q, k):
            labels.union(a, b)
        for label in q + k:
            labels.tags[label].add((node.name, h))
        labels.pin(v, f"attention constraint 4: v channels of {layout.module} map onto its input stream by "
                      "view(B, C, H, W) (tied to pe, proj and the residual adds); only key dims are pruned")
        qs.append(q)
    producer = node.args[0]
    while info(producer).kind == "batchnorm":
        producer = producer.args[0]
    param = _param_name(producer.args[1]) if info(producer).kind == "conv" else None
    if param is not None:  # the attention's input fixes C of view(B, C, H, W): its width must stay
        labels.pin(_flat(values.get(producer.args[0])), f"attention constraint 4: the input stream of {layout.module} "
                   "has as many channels as v (view(B, C, H, W)); whole heads are not pruned by this version")
    found[node.name] = (layout, param, qs)
    constraints.append((node.name, qs))
    return _fresh_for(node, labels, f"comes from {_where(node)}")


def _where(node: fx.Node) -> str:
    facts = info(node)
    path, mtype = facts.module_path or "", facts.module_type or ""
    return f"{facts.kind} {node.name}" + (f" in {path} ({mtype})" if path else "")


def _fresh_for(node: fx.Node, labels: _Labels, why: str) -> Labels:
    shape = info(node).shape
    if shape is None or len(shape) < 2 or shape[1] is None:
        return None
    return labels.fresh(shape[1], why)


def _flat(value: Labels) -> list[int]:
    if value is None:
        return []
    if isinstance(value, tuple):
        return [x for part in value for x in part]
    return list(value)


def _opaque(node, values, labels, constraints, protect) -> Labels:
    """An op whose channel semantics we do not know: pin what reaches it, and its output is unprunable."""
    why = f"reaches {_where(node)}"
    for arg in fxgraph.data_args(node):
        labels.pin(_flat(values.get(arg)), why)
    return _fresh_for(node, labels, f"comes from {_where(node)}")


def _input(node, values, labels, constraints, protect) -> Labels:
    return _fresh_for(node, labels, "image channels (graph input)")


def _per_channel(node, values, labels, constraints, protect) -> Labels:
    args = fxgraph.data_args(node)
    if len(args) != 1 or not isinstance(values.get(args[0]), list):
        return _opaque(node, values, labels, constraints, protect)
    return values[args[0]]


def _param_name(arg) -> str | None:
    return info(arg).param if isinstance(arg, fx.Node) else None


def _batchnorm(node, values, labels, constraints, protect) -> Labels:
    x = values.get(node.args[0])
    if not isinstance(x, list):
        return _opaque(node, values, labels, constraints, protect)
    roles = ((1, NORM), (2, NORM), (3, STAT), (4, STAT))
    for position, role in roles:
        name = _param_name(node.args[position]) if len(node.args) > position else None
        if name is not None:
            for i, label in enumerate(x):
                labels.touches[label].append(Touch(name, 0, i, role))
    return x


def _conv_args(node: fx.Node) -> tuple[int, bool]:
    """(groups, transposed) of a conv-like ATen call."""
    args = node.args
    if getattr(node.target, "overloadpacket", None) is aten.convolution:
        return int(args[8]), bool(args[6])
    if info(node).kind == "conv_transpose":
        return (int(args[6]) if len(args) > 6 else 1), True
    return (int(args[6]) if len(args) > 6 else 1), False


def _conv(node, values, labels, constraints, protect) -> Labels:
    x = values.get(node.args[0])
    weight = _param_name(node.args[1])
    bias = _param_name(node.args[2]) if len(node.args) > 2 else None
    groups, transposed = _conv_args(node)
    facts = info(node)
    out_channels = facts.shape[1]
    path = facts.module_path or node.name
    if weight is None or not isinstance(x, list) or (len(node.args) > 2 and node.args[2] is not None and bias is None):
        return _opaque(node, values, labels, constraints, protect)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if groups == 1:
        for i, label in enumerate(x):
            labels.touches[label].append(Touch(weight, in_dim, i, IN))
        reason = protect(node) if protect is not None else None
        if reason is None and facts.is_head_output:
            reason = f"head output ({facts.output})"
        out = [labels.new(source=(path, i), pin=reason) for i in range(out_channels)]
    elif not transposed and groups == len(x) == out_channels:  # depthwise: channel i in, channel i out
        out = list(x)
    else:  # grouped conv: channels are tied within groups; not sliced by this version
        labels.pin(x, f"reaches grouped {_where(node)}")
        return _fresh_for(node, labels, f"comes from grouped {_where(node)}")
    for i, label in enumerate(out):
        labels.touches[label].append(Touch(weight, out_dim, i, OUT))
        if bias is not None:
            labels.touches[label].append(Touch(bias, 0, i, OUT))
    return out


def _channel_dim(node: fx.Node, dim: int) -> bool:
    shape = info(node).shape
    rank = len(shape) if shape is not None else None
    if dim < 0 and rank is not None:
        dim += rank
    return dim == 1


def _cat(node, values, labels, constraints, protect) -> Labels:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    parts = [values.get(t) for t in tensors]
    if not _channel_dim(node, dim) or not all(isinstance(p, list) for p in parts):
        return _opaque(node, values, labels, constraints, protect)
    return [label for part in parts for label in part]


def _split(node, values, labels, constraints, protect) -> Labels:
    x = values.get(node.args[0])
    packet = getattr(node.target, "overloadpacket", None)
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    source_shape = info(node.args[0]).shape
    rank = len(source_shape) if source_shape is not None else 0
    if not isinstance(x, list) or (dim if dim >= 0 else dim + rank) != 1:
        return _opaque(node, values, labels, constraints, protect)
    n = len(x)
    if packet is aten.chunk:
        chunks = int(node.args[1])
        size = -(-n // chunks)
        parts = [x[i : i + size] for i in range(0, n, size)]
        if n % chunks == 0:
            constraints.append((node.name, parts))  # chunk keeps its halves equal only if all lose the same
        else:
            labels.pin(x, f"reaches uneven {_where(node)}")
    elif packet in (aten.split_with_sizes, aten.split) and _equal_sizes(node.args[1], n):
        # split((c, c)) as C2PSA/PSA write it: the module recomputes its sizes from its `c` (resynced by
        # pruning.policy.sync_modules), so like chunk it only needs every part to lose the same count
        sizes = node.args[1]
        size = sizes if isinstance(sizes, int) else sizes[0]
        parts = [x[i : i + size] for i in range(0, n, size)]
        constraints.append((node.name, parts))
    else:  # unequal sizes are baked into the module's code, which surgery does not rewrite: pin
        return _opaque(node, values, labels, constraints, protect)
    for k, part in enumerate(parts):
        for label in part:
            labels.tags[label].add((node.name, k))
    return tuple(parts)


def _equal_sizes(sizes, n: int) -> bool:
    """Whether split sizes (an int or a list) cut `n` channels into equal parts."""
    if isinstance(sizes, int):
        return sizes > 0 and n % sizes == 0
    return isinstance(sizes, (list, tuple)) and len(set(sizes)) == 1 and sum(sizes) == n


def _getitem(node, values, labels, constraints, protect) -> Labels:
    source, index = node.args[0], node.args[1]
    value = values.get(source)
    if isinstance(value, tuple):
        return value[index]
    if info(source).kind == "batchnorm" and index == 0 and isinstance(value, list):
        return value  # _native_batch_norm_legit_no_training returns (out, mean, invstd)
    return _opaque(node, values, labels, constraints, protect)


def _binary(node, values, labels, constraints, protect) -> Labels:
    tensors = fxgraph.data_args(node)
    others = [a for a in node.all_input_nodes if a not in tensors and info(a).kind != ops.SIZE]
    out_shape = info(node).shape
    out_rank = len(out_shape) if out_shape is not None else 0
    per_channel_other = any(_varies_on_channels(a, out_rank) for a in others)
    parts = [values.get(t) for t in tensors]
    if per_channel_other or not parts or not all(isinstance(p, list) for p in parts):
        return _opaque(node, values, labels, constraints, protect)
    n = len(parts[0])
    if any(len(p) != n for p in parts):
        return _opaque(node, values, labels, constraints, protect)
    for other in parts[1:]:
        for a, b in zip(parts[0], other):
            labels.union(a, b)
    return parts[0]


def _varies_on_channels(node: fx.Node, out_rank: int) -> bool:
    """Whether a parameter or constant operand varies along the output's channel dimension (dim 1), so that
    cutting channels would need slicing it too."""
    shape = getattr(node.meta.get("val"), "shape", None) or info(node).shape  # val: the export's fake tensor
    if shape is None:
        return False
    position = len(shape) - (out_rank - 1)  # broadcasting aligns trailing dimensions
    return 0 <= position < len(shape) and shape[position] not in (1, None)


def _output(node, values, labels, constraints, protect) -> Labels:
    for arg in node.all_input_nodes:
        labels.pin(_flat(values.get(arg)), f"is a model output ({arg.name})")
    return None


_HANDLERS: dict[str, Callable] = {
    ops.INPUT: _input,
    ops.OUTPUT: _output,
    "conv": _conv,
    "conv_transpose": _conv,
    "batchnorm": _batchnorm,
    "cat": _cat,
    "split": _split,
    "getitem": _getitem,
    **{k: _per_channel for k in PER_CHANNEL_KINDS},
    **{k: _binary for k in BINARY_KINDS},
}


def _collect(labels: _Labels, constraints, order, gm: fx.GraphModule, values, found) -> Coupling:
    """Turn the label union-find into units, groups and blocks."""
    members = labels.components()
    node_of_path = {info(n).module_path: n for n in gm.graph.nodes if info(n).kind in ops.FILTER_KINDS}
    units: dict[int, Unit] = {}
    keys: dict[int, tuple] = {}
    for root, group_labels in members.items():
        touches = tuple(t for label in group_labels for t in labels.touches[label])
        sources = tuple(sorted(labels.source[label] for label in group_labels if labels.source[label] is not None))
        if not sources:
            continue  # channels that no filter produces (image, folded constants): nothing to cut
        pins = tuple(dict.fromkeys(p for label in group_labels for p in labels.pins.get(label, ())))
        tags = frozenset(tag for label in group_labels for tag in labels.tags.get(label, ()))
        units[root] = Unit(touches=touches, sources=sources, pinned=pins)
        keys[root] = (frozenset(path for path, _ in sources), tags, bool(pins))

    def source_rank(path: str) -> int:
        node = node_of_path.get(path)
        return order.get(node, 1 << 30)

    by_key: dict[tuple, list[int]] = defaultdict(list)
    for root, key in keys.items():
        by_key[key].append(root)
    raw_groups = []
    for key, roots in by_key.items():
        roots.sort(key=lambda r: min((source_rank(p), i) for p, i in units[r].sources))
        paths = sorted(key[0], key=source_rank)
        primary = paths[0]
        indices = sorted(i for r in roots for p, i in units[r].sources if p == primary)
        node = node_of_path.get(primary)
        full = node is not None and info(node).shape is not None and len(indices) == info(node).shape[1]
        name = primary if full else f"{primary}[{indices[0]}:{indices[-1] + 1}]"
        layers = frozenset(
            info(n).layer for n in (node_of_path.get(p) for p in paths) if n is not None and info(n).layer is not None
        )
        first_pins = next((units[r].pinned for r in roots if units[r].pinned), ())
        raw_groups.append(
            (
                source_rank(primary),
                Group(
                    name=name,
                    units=[units[r] for r in roots],
                    sources=tuple(paths),
                    layer=info(node).layer if node is not None else None,
                    layers=layers,
                    protected="; ".join(first_pins[:2]) or None,
                ),
                roots,
            )
        )
    raw_groups.sort(key=lambda item: (item[0], item[1].name))
    groups: dict[str, Group] = {}
    group_of_root: dict[int, str] = {}
    group_roots: dict[str, list[int]] = {}
    for _, group, roots in raw_groups:
        name, k = group.name, 1
        while name in groups:
            k += 1
            name = f"{group.name}#{k}"
        group.name = name
        groups[name] = group
        group_roots[name] = roots
        for r in roots:
            group_of_root[r] = name
    blocks = _blocks(labels, constraints, groups, group_of_root)
    heads, reasons = {}, {}
    for name, (layout, param, qs) in found.items():
        names = tuple(group_of_root.get(labels.find(q[0])) for q in qs) if layout.key_dim else ()
        if not names or None in names or len(set(names)) != len(names):
            continue  # the pairs did not form one group per head: _blocks protected them
        heads[name] = HeadCut(layout, param, names)
        block = next((b for b in blocks if names[0] in b), names)
        reasons[block] = (f"attention constraint 3: every head of {layout.module} keeps the same key_dim, so its "
                          f"{layout.num_heads} heads' q/k groups must lose equally many pairs")
    unit_of_root = {r: (name, i) for name, group in groups.items() for i, r in enumerate(group_roots[name])}
    channels = {
        node.name: [unit_of_root.get(labels.find(label)) for label in value]
        for node, value in values.items()
        if isinstance(value, list)
    }
    return Coupling(groups=groups, blocks=blocks, channels=channels, block_reasons=reasons, heads=heads)


def _blocks(labels: _Labels, constraints, groups: dict[str, Group], group_of_root: dict[int, str]) -> list[tuple[str, ...]]:
    """Groups that must lose equally many channels; groups under a split we cannot honour become protected."""
    tied = nx.Graph()
    for split_name, parts in constraints:
        part_groups = [{group_of_root.get(labels.find(label)) for label in part} for part in parts]
        exact = all(
            len(names) == 1 and None not in names and len(groups[next(iter(names))]) == len(part)
            for names, part in zip(part_groups, parts)
        )
        distinct = exact and len({next(iter(n)) for n in part_groups}) == len(parts)
        if not distinct:
            for names in part_groups:
                for name in names - {None}:
                    if groups[name].protected is None:
                        groups[name].protected = f"its channels are split unevenly by {split_name}"
            continue
        names = [next(iter(n)) for n in part_groups]
        nx.add_path(tied, names)
    rank = {name: i for i, name in enumerate(groups)}
    blocks = []
    for comp in nx.connected_components(tied):
        names = sorted(comp, key=rank.__getitem__)
        if any(not groups[n].prunable for n in names):  # one protected part fixes the others' size too
            reason = next(groups[n].protected for n in names if not groups[n].prunable)
            for n in names:
                if groups[n].prunable:
                    groups[n].protected = f"a split ties it to a protected group ({reason.split(';')[0]})"
        blocks.append(tuple(names))
    blocks.sort(key=lambda b: rank[b[0]])
    return blocks

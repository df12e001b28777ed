"""Parameter and FLOP counts of a flat graph: the one place these user-facing numbers are computed.

FLOPs follow the convention of ultralytics's `model.info()` (thop): per image, multiply-accumulates of conv,
transposed conv and linear layers plus 4 per BatchNorm element (2 for the norm, doubled for the affine part),
activations, pooling, nearest upsampling and the head's functional ops count 0; GFLOPs = 2 * MACs / 1e9.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from torch import fx

from . import ops
from .graph import FlatGraph
from .nodeinfo import info


def node_macs(node: fx.Node) -> int:
    """thop-compatible multiply-accumulate count of one node for a batch of one image."""
    facts = info(node)
    kind, out = facts.kind, facts.shape
    if out is None:
        return 0
    out_numel = math.prod(d for d in out[1:] if d is not None)
    if kind == "conv":
        weight = info(node.args[1]).shape
        groups = node.args[6] if len(node.args) > 6 else 1
        in_ch = info(node.args[0]).shape[1]
        return out_numel * (in_ch // groups) * math.prod(weight[2:])
    if kind == "conv_transpose":
        weight = info(node.args[1]).shape
        in_shape = info(node.args[0]).shape
        groups = node.args[6] if len(node.args) > 6 else 1
        return math.prod(d for d in in_shape[1:] if d is not None) * (out[1] // groups) * math.prod(weight[2:])
    if kind == "batchnorm":
        return 4 * out_numel
    if kind == "linear":
        return out_numel * info(node.args[1]).shape[1]
    return 0


def gflops(graph: FlatGraph | fx.GraphModule) -> float:
    """Total GFLOPs of one image through the graph, as ultralytics's model.info() reports them."""
    gm = graph.module if isinstance(graph, FlatGraph) else graph
    return 2 * sum(node_macs(n) for n in gm.graph.nodes) / 1e9


def num_params(graph: FlatGraph | fx.GraphModule) -> int:
    """Number of parameters (not buffers) of the graph module, as model.info() counts them."""
    gm = graph.module if isinstance(graph, FlatGraph) else graph
    return sum(p.numel() for p in gm.parameters())


@dataclass
class LayerRow:
    """One ultralytics layer of a summary."""

    index: int | None
    type: str
    channels_in: tuple[int, ...]
    channels_out: tuple[int, ...]
    params: int
    gflops: float


def layer_table(graph: FlatGraph) -> list[LayerRow]:
    """One row per ultralytics layer: index, type, channels in -> out, params, GFLOPs."""
    gm = graph.module
    by_layer: dict[int | None, list[fx.Node]] = defaultdict(list)
    for node in gm.graph.nodes:
        facts = info(node)
        if facts.kind == ops.PARAM or facts.kind not in ops.STRUCTURAL:  # compute ops and their parameters
            by_layer[facts.layer].append(node)
    params = dict(gm.named_parameters())
    rows = []
    for index in sorted(by_layer, key=lambda i: (i is None, i if i is not None else 0)):
        nodes = by_layer[index]
        members = set(nodes)
        ins: list[fx.Node] = []
        outs: list[fx.Node] = []
        for n in nodes:
            if info(n).kind == ops.PARAM:
                continue
            ins += [a for a in n.all_input_nodes if a not in members and info(a).kind not in ops.NON_DATA and a not in ins]
            if any(u not in members for u in n.users):
                outs.append(n)
        layer_type = type(graph.model.model[index]).__name__ if index is not None else "-"
        rows.append(
            LayerRow(
                index=index,
                type=layer_type,
                channels_in=tuple(info(a).channels or 0 for a in ins),
                channels_out=tuple(info(o).channels or 0 for o in outs),
                params=sum(params[n.target].numel() for n in nodes if n.op == "get_attr" and n.target in params),
                gflops=2 * sum(node_macs(n) for n in nodes) / 1e9,
            )
        )
    return rows

"""The flat graph as a networkx DiGraph, for the pruning coupling analysis and for drawing."""

from __future__ import annotations

import networkx as nx
from torch import fx

from .graph import FlatGraph
from .nodeinfo import info

NODE_ATTRS = ("kind", "layer", "module_path", "module_type", "channels", "shape", "param", "folded_bn", "role", "output")
_ONLY_IF_SET = ("param", "folded_bn", "role", "output")


def to_networkx(g: FlatGraph | fx.GraphModule) -> nx.DiGraph:
    """One networkx node per fx node (keyed by node name) with its NodeInfo fields as attributes (`param`,
    `folded_bn`, `role` and `output` only where set); an edge per argument use.

    Edge attribute `arg` is the flat position of the producer among the consumer's node arguments, which is
    what orders the operands of `cat` and tells a conv's input from its weight.
    """
    gm = g.module if isinstance(g, FlatGraph) else g
    dg = nx.DiGraph()
    for node in gm.graph.nodes:
        facts = info(node)
        attrs = {k: getattr(facts, k) for k in NODE_ATTRS if k not in _ONLY_IF_SET or getattr(facts, k) is not None}
        dg.add_node(node.name, op=node.op, target=str(node.target), **attrs)
    for node in gm.graph.nodes:
        for position, arg in enumerate(node.all_input_nodes):
            dg.add_edge(arg.name, node.name, arg=position)
    return dg

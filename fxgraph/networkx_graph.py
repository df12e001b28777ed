"""The flat graph as a networkx DiGraph, for the pruning coupling analysis and for drawing."""

from __future__ import annotations

import networkx as nx
from torch import fx

from .graph import FlatGraph

NODE_ATTRS = ("kind", "layer", "module_path", "module_type", "channels", "shape", "param", "folded_bn")


def to_networkx(g: FlatGraph | fx.GraphModule) -> nx.DiGraph:
    """One networkx node per fx node (keyed by node name) with its metadata; an edge per argument use.

    Edge attribute `arg` is the flat position of the producer among the consumer's node arguments, which is
    what orders the operands of `cat` and tells a conv's input from its weight.
    """
    gm = g.module if isinstance(g, FlatGraph) else g
    dg = nx.DiGraph()
    for node in gm.graph.nodes:
        attrs = {k: node.meta[k] for k in NODE_ATTRS if k in node.meta}
        dg.add_node(node.name, op=node.op, target=str(node.target), **attrs)
    for node in gm.graph.nodes:
        for position, arg in enumerate(node.all_input_nodes):
            dg.add_edge(arg.name, node.name, arg=position)
    return dg

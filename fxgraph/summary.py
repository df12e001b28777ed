"""Text summary and GraphViz drawing of a flat graph (what `python -m fxgraph summary` prints)."""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from . import ops
from .graph import FlatGraph
from .nodeinfo import info
from .stats import gflops, layer_table, num_params


def format_summary(graph: FlatGraph) -> str:
    """One row per ultralytics layer (index, type, channels in -> out, params, GFLOPs) and the totals."""
    rows = layer_table(graph)
    lines = [f"{'layer':>5}  {'type':<10} {'channels in -> out':<28} {'params':>12} {'GFLOPs':>9}"]
    for r in rows:
        chans = f"{'+'.join(map(str, r.channels_in)) or '-'} -> {'+'.join(map(str, r.channels_out)) or '-'}"
        idx = "-" if r.index is None else str(r.index)
        lines.append(f"{idx:>5}  {r.type:<10} {chans:<28} {r.params:>12,} {r.gflops:>9.3f}")
    kinds = Counter(info(n).kind for n in graph.nodes() if info(n).kind in ops.TENSOR_KINDS)
    h, w = graph.imgsz
    lines.append(
        f"total: {len(rows)} layers, {num_params(graph):,} parameters, {gflops(graph):.1f} GFLOPs at {h}x{w} "
        f"(per image); task {graph.task}, {graph.nc} classes"
    )
    lines.append("graph: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def write_dot(graph: FlatGraph, out: TextIO) -> None:
    """Write the node graph as GraphViz dot: one cluster per ultralytics layer, parameters left out."""
    gm = graph.module
    out.write("digraph flatgraph {\n  rankdir=TB;\n  node [shape=box, fontsize=9];\n")
    clusters: dict[object, list[str]] = {}
    for node in gm.graph.nodes:
        facts = info(node)
        if facts.kind in ops.NON_DATA:
            continue
        label = f"{node.name}\\n{facts.kind}" + (f" c={facts.channels}" if facts.channels else "")
        clusters.setdefault(facts.layer, []).append(f'    "{node.name}" [label="{label}"];')
    for layer, lines in clusters.items():
        if layer is None:
            out.write("\n".join(lines) + "\n")
        else:
            out.write(f"  subgraph cluster_{layer} {{\n    label=\"{layer}: {type(graph.model.model[layer]).__name__}\";\n")
            out.write("\n".join(lines) + "\n  }\n")
    for node in gm.graph.nodes:
        if info(node).kind in ops.NON_DATA:
            continue
        for arg in node.all_input_nodes:
            if info(arg).kind not in ops.NON_DATA:
                out.write(f'  "{arg.name}" -> "{node.name}";\n')
    out.write("}\n")

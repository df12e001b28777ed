"""Grouping: labels tied by the propagation form *units* (connected components: channels that can only go
together); units with the same producers and path through splits form a *group* (one layer's channels,
DepGraph's group); groups on the parts of one split form a *block* that must lose equally many channels."""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from fxgraph import info, ops

from .propagation import ChannelLabels, Propagation
from .units import Coupling, Group, HeadCut, Unit


def group(prop: Propagation) -> Coupling:
    """Turn a finished propagation's labels into units, groups and blocks."""
    labels, constraints, values, found, gm = prop.labels, prop.constraints, prop.values, prop.found, prop.gm
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
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
    for name, (layout, param, qs, vs) in found.items():
        names = tuple(group_of_root.get(labels.find(q[0])) for q in qs) if layout.key_dim else ()
        v_names = tuple(group_of_root.get(labels.find(v[0])) for v in vs if v)
        every = names + v_names
        if not names or None in every or len(set(every)) != len(every):
            continue  # the pairs did not form one group per head: _blocks protected them
        heads[name] = HeadCut(layout, param, names, v_names)
        block = next((b for b in blocks if names[0] in b), every)
        reasons[block] = (f"attention constraint 3: every head of {layout.module} keeps the same key_dim, so its "
                          f"{layout.num_heads} heads' q/k groups must lose equally many pairs"
                          + (" and its v groups as many channels (q, k and v share one head_dim)" if v_names else ""))
    unit_of_root = {r: (name, i) for name, group in groups.items() for i, r in enumerate(group_roots[name])}
    channels = {
        node.name: [unit_of_root.get(labels.find(label)) for label in value]
        for node, value in values.items()
        if isinstance(value, list)
    }
    return Coupling(groups=groups, blocks=blocks, channels=channels, block_reasons=reasons, heads=heads)


def _blocks(labels: ChannelLabels, constraints, groups: dict[str, Group], group_of_root: dict[int, str]) -> list[tuple[str, ...]]:
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

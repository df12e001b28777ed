"""Choosing residual blocks to remove: block scores from the criterion's own pass, weakest removable blocks first.

A data-driven criterion with per-filter statistics (DetDSHAP's |relevance|, Taylor's |a·∂L/∂a|) is run once: the
same statistics give the channel scores (summed over each unit's filters) and the block scores (summed over the
filters of each branch's last conv, i.e. what flows out of the branch); l1/l2/random score blocks from the
weights or a seeded draw (pruning.blocks.block_scores).
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import fxgraph

from .blocks import BlockError, ResidualBlock, block_scores, find_blocks
from .coupling import Coupling
from .criteria import distributed
from .criteria.stats import unit_scores
from .depth import check_removal
from .errors import EmptyLayerError
from .importance import Criterion, Precomputed, criterion_name, get_criterion
from .policy import scope_layers

BlockScore = Callable[[list[ResidualBlock]], dict[str, float]]


def shared_scores(graph: fxgraph.FlatGraph, coupling: Coupling, criterion: str | Criterion) -> tuple[Criterion, BlockScore]:
    """The channel criterion and the block scorer of `criterion`, from one scoring pass where it has one."""
    crit = get_criterion(criterion)
    filter_stats = getattr(crit, "filter_stats", None)
    if filter_stats is None:
        return crit, lambda blocks: block_scores(graph, blocks, crit)
    blocks = find_blocks(graph)
    paths = {p for g in coupling.groups.values() for u in g.units for p, _ in u.sources}
    paths |= {b.last_conv for b in blocks.values() if b.last_conv}
    takes_paths = len(inspect.signature(filter_stats).parameters) >= 2
    stats = distributed.all_reduce_sums(filter_stats(graph, paths) if takes_paths else filter_stats(graph))
    width = Precomputed(unit_scores(coupling, stats), criterion_name(crit))
    return width, lambda chosen: block_scores(graph, chosen, crit, stats)


def removable_blocks(graph: fxgraph.FlatGraph, scope: str | Iterable[int] = "all") -> list[ResidualBlock]:
    """The removable residual blocks of `graph` whose layer is in `scope`."""
    layers = scope_layers(scope, graph)
    return [b for b in find_blocks(graph).values() if b.removable and (layers is None or b.layer in layers)]


def choose_blocks(graph: fxgraph.FlatGraph, blocks: int | Iterable[str] | None, depth_ratio: float | None,
                  score: BlockScore, *, scope: str | Iterable[int] = "all") -> list[str]:
    """Names of the blocks to remove: `blocks` as given (checked), or the `blocks` (count) weakest removable ones by
    `score`, skipping any whose removal would empty its module (n = 0); `depth_ratio` is a fraction of the blocks
    that may go that way."""
    found = find_blocks(graph)
    if blocks is not None and not isinstance(blocks, int):
        if isinstance(blocks, (str, bool)):
            raise BlockError(f"blocks must be a count or a list of block names; got {blocks!r}")
        names = list(blocks)
        check_removal(found, names, graph.model)
        return names
    candidates = removable_blocks(graph, scope)
    if isinstance(blocks, bool) or (blocks is not None and blocks < 0):
        raise BlockError(f"blocks must be a count >= 0 or a list of block names; got {blocks!r}")
    scores = score(candidates) if candidates else {}
    ranked: list[str] = []  # every block that may go, weakest first; each module keeps at least one block
    for block in sorted(candidates, key=lambda b: (scores[b.name], b.name)):
        try:
            check_removal(found, [*ranked, block.name], graph.model)
        except EmptyLayerError:
            continue
        ranked.append(block.name)
    k = blocks if blocks is not None else round((depth_ratio or 0.0) * len(ranked))
    if k > len(ranked):
        raise BlockError(f"only {len(ranked)} residual blocks can be removed in scope {scope!r} without emptying a "
                         f"module (asked for {k}); removable: {ranked}")
    return ranked[:k]

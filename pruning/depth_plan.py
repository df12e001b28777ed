"""Choosing residual blocks to remove: block scores from the criterion's own pass, weakest removable blocks first.

A data-driven criterion with per-filter statistics (DetDSHAP's |relevance|, Taylor's |a·∂L/∂a|) is run once: the
same statistics give the channel scores (summed over each unit's filters) and the block scores (summed over the
filters of each branch's last conv, i.e. what flows out of the branch); l1/l2/random score blocks from the
weights or a seeded draw (pruning.blocks.block_scores).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Iterable

import fxgraph

from .blocks import BlockError, ResidualBlock, block_scores, find_blocks
from .coupling import Coupling
from .criteria import distributed
from .criteria.stats import unit_scores
from .depth import check_removal
from .errors import EmptyLayerError, PlanError
from .criterion import Criterion, Precomputed, criterion_name, get_criterion
from .plans import Plan, make_plan
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
    if blocks is not None and not isinstance(blocks, int):
        if isinstance(blocks, (str, bool)):
            raise BlockError(f"blocks must be a count or a list of block names; got {blocks!r}")
        names = list(blocks)
        check_removal(find_blocks(graph), names, graph.model)
        return names
    if isinstance(blocks, bool) or (blocks is not None and blocks < 0):
        raise BlockError(f"blocks must be a count >= 0 or a list of block names; got {blocks!r}")
    ranked = rank_blocks(graph, score, scope=scope)
    k = blocks if blocks is not None else round((depth_ratio or 0.0) * len(ranked))
    if k > len(ranked):
        raise BlockError(f"only {len(ranked)} residual blocks can be removed in scope {scope!r} without emptying a "
                         f"module (asked for {k}); removable: {ranked}")
    return ranked[:k]


def rank_blocks(graph: fxgraph.FlatGraph, score: BlockScore, *, scope: str | Iterable[int] = "all") -> list[str]:
    """Every removable block in `scope` that may go, weakest first by `score`, skipping any whose removal (after
    the weaker ones) would empty its module: each module keeps at least one block."""
    found = find_blocks(graph)
    candidates = removable_blocks(graph, scope)
    scores = score(candidates) if candidates else {}
    ranked: list[str] = []
    for block in sorted(candidates, key=lambda b: (scores[b.name], b.name)):
        try:
            check_removal(found, [*ranked, block.name], graph.model)
        except EmptyLayerError:
            continue
        ranked.append(block.name)
    return ranked


PRUNE_DEPTH = ("never", "auto", "only")  # the job's `prune_depth`: channels only, channels and blocks, blocks only


class BlockScored(dict):
    """Channel scores (group name -> tensor) that also carry `block_scores` (block name -> score) from the same
    scoring pass, for a pipeline step that removes blocks too."""

    def __init__(self, scores: dict, block_scores: dict[str, float]) -> None:
        super().__init__(scores)
        self.block_scores = block_scores
        self.global_ranking = getattr(scores, "global_ranking", True)


def score_with_blocks(graph: fxgraph.FlatGraph, coupling: Coupling, criterion: str | Criterion,
                      scope: str | Iterable[int] = "all") -> BlockScored:
    """Channel scores and the scores of the removable blocks in `scope`, from one pass of `criterion`."""
    width, block_score = shared_scores(graph, coupling, criterion)
    return BlockScored(width(graph, coupling), block_score(removable_blocks(graph, scope)))


def step_blocks(graph: fxgraph.FlatGraph, scores: dict, step_ratio: float, scope: str | Iterable[int]) -> list[str]:
    """The blocks one pipeline step removes: `step_ratio` of those that may go (at least one while any may),
    weakest first by `scores.block_scores` (BlockScored)."""
    known = getattr(scores, "block_scores", None)
    if known is None:
        raise BlockError("these scores carry no block scores: score with pruning.depth_plan.score_with_blocks")
    ranked = rank_blocks(graph, lambda blocks: {b.name: known.get(b.name, 0.0) for b in blocks}, scope=scope)
    return ranked[: min(len(ranked), max(1, round(step_ratio * len(ranked))))]


def search_target(graph: fxgraph.FlatGraph, coupling: Coupling, target: float, removed: Callable[[Plan], float], *,
                  criterion: str | Criterion, depth: str, scope: str | Iterable[int], min_channels: int,
                  round_to: int, step: float = 0.02, resolution: float = 1e-3) -> Plan:
    """The plan of channels and blocks that removes at least `target` (as `removed(plan)` measures it: GFLOPs,
    params or measured latency), built greedily.

    depth="only": the weakest blocks, one at a time.  depth="auto": at each step, the next channel step (`step`
    more of the channels, globally ranked) and the next weakest block are both tried, and the one removing more of
    the metric per unit of score lost is taken (score lost: the block's score, or the summed scores of the units
    the channel step adds; both Σ|relevance| for DetDSHAP, from the same pass); a last channel step is bisected to
    `resolution` so the target is met without overshooting by a whole step.  Raises PlanError when everything
    that may go does not reach `target`."""
    width, block_score = shared_scores(graph, coupling, criterion)
    scores = width(graph, coupling)
    width = Precomputed(scores, criterion_name(width))
    ranked = rank_blocks(graph, block_score, scope=scope)
    by_name = block_score(removable_blocks(graph, scope)) if ranked else {}

    def make(ratio: float, k: int) -> Plan:
        p = make_plan(graph, coupling, ratio=ratio, scope=scope, criterion=width, min_channels=min_channels,
                      round_to=round_to)
        p.settings.update({"depth": depth, "blocks": k})
        return dataclasses.replace(p, blocks=tuple(ranked[:k]))

    def lost(p: Plan) -> float:
        return sum(float(scores[n][list(ix)].sum()) for n, ix in p.remove.items())

    ratio, k, previous = 0.0, 0, 0.0
    current, gained = make(0.0, 0), 0.0
    while gained < target:
        options = []
        if k < len(ranked):
            p = make(ratio, k + 1)
            options.append((p, removed(p), by_name.get(ranked[k], 0.0), ratio, k + 1))
        if depth == "auto" and ratio + step < 0.99:
            p = make(ratio + step, k)
            options.append((p, removed(p), lost(p) - lost(current), ratio + step, k))
        if not options:
            raise PlanError(f"cannot remove {target:.1%}: at most {gained:.1%} with depth={depth!r} in scope {scope!r}; "
                            "lower the target or allow channels (depth='auto')")
        best = max(options, key=lambda o: (o[1] - gained) / max(o[2], 1e-12))
        previous = ratio
        current, gained, ratio, k = best[0], best[1], best[3], best[4]
    if ratio > previous:  # the last step was a channel step: bisect it so the target is not overshot by a step
        lo, hi = previous, ratio
        while hi - lo > resolution:
            mid = (lo + hi) / 2
            p = make(mid, k)
            if removed(p) >= target:
                hi, current = mid, p
            else:
                lo = mid
    return current

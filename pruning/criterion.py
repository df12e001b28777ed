"""The criterion interface of the engine: what a criterion is and gives, and the checks on what it gave.

A criterion is any callable `criterion(graph, coupling) -> {group name: 1-D tensor of len(group)}`, higher = keep,
as Torch-Pruning's pruners take an `Importance` object.  The criteria themselves and their one registry by name
live in `pruning.criteria` (`pruning.criteria.registry`), which installs its lookup here (`use_names`), so the
engine resolves a name such as "l1" without importing the criteria.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

import fxgraph

from .coupling import Coupling, Group
from .errors import PlanError

Scores = dict[str, torch.Tensor]


class GroupwiseScores(dict):
    """Scores comparable only within a group (e.g. HSIC-Lasso path entry λs: each layer solves its own problem).

    A plan made from them never ranks groups against each other: a `ratio` removes that fraction of every group
    (each group's budget, rounded down to its `round_to` step, the fraction set so the total is `ratio`), and the
    criterion chooses which units within it; `threshold` still applies as is.
    """

    global_ranking = False


class Criterion(Protocol):
    """Scores every unit of every group of `coupling` (higher = more worth keeping)."""

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores: ...


class Precomputed:
    """Scores computed once (a data-driven criterion is costly), replayed for several plans under the name of the
    criterion that made them."""

    def __init__(self, scores: Scores, name: str) -> None:
        self.scores, self.name = scores, name

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        return self.scores


def criterion_name(criterion: Criterion) -> str:
    return getattr(criterion, "name", getattr(criterion, "__name__", type(criterion).__name__))


_NAMES: list[Callable[[str], Criterion]] = []  # the criteria registry's lookup, installed by pruning.criteria


def use_names(lookup: Callable[[str], Criterion]) -> None:
    """Resolve criterion names with `lookup(name)` (pruning.criteria.registry installs its own on import)."""
    _NAMES[:] = [lookup]


def get_criterion(criterion: str | Criterion) -> Criterion:
    """The callable itself, or the data-free criterion registered as `criterion` ('l1', 'l2', 'random')."""
    if callable(criterion):
        return criterion
    if not _NAMES:
        raise PlanError(f"criterion {criterion!r}: no criteria are registered; import pruning (or pruning.criteria)")
    return _NAMES[0](criterion)


def check_scores(scores: Scores, groups: list[Group]) -> None:
    """Raise PlanError unless every group has one finite score per unit."""
    for group in groups:
        s = scores.get(group.name)
        if s is None or s.ndim != 1 or len(s) != len(group):
            raise PlanError(f"criterion gave no scores of length {len(group)} for group {group.name}")
        if not torch.isfinite(s).all():
            raise PlanError(f"criterion gave non-finite scores for group {group.name}")

"""The criterion interface of the engine: what a criterion is, a registry of criteria by name, and score checks.

A criterion is any callable `criterion(graph, coupling) -> {group name: 1-D tensor of len(group)}`, higher = keep.
The built-in criteria (pruning.criteria) register themselves here by name, so the engine (plans) resolves names
without importing them, as Torch-Pruning's pruners take an `Importance` object.
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


CRITERIA: dict[str, Callable[[], Criterion]] = {}  # filled by pruning.criteria (data-free criteria only)


def register(name: str, factory: Callable[[], Criterion]) -> None:
    """Make `factory()` the criterion called `name` (for get_criterion and plans given a name)."""
    CRITERIA[name] = factory


def get_criterion(criterion: str | Criterion) -> Criterion:
    """A criterion by name ('l1', 'l2', 'random') or the callable itself."""
    if callable(criterion):
        return criterion
    try:
        return CRITERIA[criterion]()
    except KeyError:
        raise PlanError(f"unknown criterion {criterion!r}; use one of {sorted(CRITERIA)} or a callable") from None


def check_scores(scores: Scores, groups: list[Group]) -> None:
    """Raise PlanError unless every group has one finite score per unit."""
    for group in groups:
        s = scores.get(group.name)
        if s is None or s.ndim != 1 or len(s) != len(group):
            raise PlanError(f"criterion gave no scores of length {len(group)} for group {group.name}")
        if not torch.isfinite(s).all():
            raise PlanError(f"criterion gave non-finite scores for group {group.name}")

"""Pruning criteria: one score per unit of each channel group, higher = keep.

A criterion is any callable `criterion(graph, coupling) -> {group name: 1-D tensor of len(group)}`.  The
magnitude criteria (`l1`, `l2`) are the DepGraph baseline; `random` is a control for experiments and is never a
default.  Relevance criteria (DetDSHAP, HSIC-Lasso) plug in with the same signature.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import nn

import fxgraph
from fxgraph.passes import get_tensor

from .coupling import OUT, Coupling, Group
from .errors import PlanError

Scores = dict[str, torch.Tensor]


class Criterion(Protocol):
    """Scores every unit of every group of `coupling` (higher = more worth keeping)."""

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores: ...


class Magnitude:
    """Lp magnitude of each unit's filters: for each producing filter (every `out` weight touch),
    sum |w|^p over the filter, then the mean over the unit's filters (DepGraph's MagnitudeImportance, p=1 or 2).
    """

    def __init__(self, p: int = 2) -> None:
        self.p = p
        self.name = f"l{p}"

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        module = graph.module
        cache: dict[tuple[str, int], torch.Tensor] = {}

        def norms(param: str, dim: int) -> torch.Tensor:
            if (param, dim) not in cache:
                w = get_tensor(module, param).detach()
                w = w.transpose(0, dim).reshape(w.shape[dim], -1)
                cache[param, dim] = torch.linalg.vector_norm(w, ord=self.p, dim=1).double() ** self.p
            return cache[param, dim]

        scores: Scores = {}
        for group in coupling.groups.values():
            total = torch.zeros(len(group), dtype=torch.float64)
            count = torch.zeros(len(group), dtype=torch.float64)
            rows: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
            for u, unit in enumerate(group.units):
                for t in unit.touches:
                    if t.role == OUT and t.param.endswith("weight"):
                        units, indices = rows.setdefault((t.param, t.dim), ([], []))
                        units.append(u)
                        indices.append(t.index)
            for (param, dim), (units, indices) in rows.items():
                total.index_add_(0, torch.tensor(units), norms(param, dim)[torch.tensor(indices)])
                count.index_add_(0, torch.tensor(units), torch.ones(len(units), dtype=torch.float64))
            scores[group.name] = total / count.clamp(min=1)
        return scores


class RandomCriterion:
    """Uniform random scores (a control: prunes without looking at the model).  Seeded, so reproducible."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        gen = torch.Generator().manual_seed(self.seed)
        return {g.name: torch.rand(len(g), generator=gen, dtype=torch.float64) for g in coupling.groups.values()}


class Precomputed:
    """Scores computed once (a data-driven criterion is costly), replayed for several plans under the name of the
    criterion that made them."""

    def __init__(self, scores: Scores, name: str) -> None:
        self.scores, self.name = scores, name

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        return self.scores


def criterion_name(criterion: Criterion) -> str:
    return getattr(criterion, "name", getattr(criterion, "__name__", type(criterion).__name__))


CRITERIA: dict[str, Callable[[], Criterion]] = {
    "l1": lambda: Magnitude(1),
    "l2": lambda: Magnitude(2),
    "random": RandomCriterion,
}


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

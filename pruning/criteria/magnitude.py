"""Data-free criteria: Lp magnitude of the filters (`l1`, `l2`, the DepGraph baseline) and `random` (a control
for experiments, never a default)."""

from __future__ import annotations

import torch

import fxgraph
from fxgraph.passes import get_tensor

from ..coupling import OUT, Coupling
from ..criterion import Scores


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
                # computed where the weights live (CPU or CUDA); the one number per filter comes to the CPU, where
                # scores are kept (index_add_ below needs its operands on one device)
                cache[param, dim] = (torch.linalg.vector_norm(w, ord=self.p, dim=1).double() ** self.p).cpu()
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

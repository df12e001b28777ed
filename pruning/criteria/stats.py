"""Per-filter statistics and how they become unit scores: shared by the data-driven criteria.

A unit's score is the sum of the statistic over the unit's producing filters (`Unit.sources`), so coupled channels
(a residual's operands) are judged together.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..coupling import Coupling
from ..criterion import Scores

FilterStats = dict[str, torch.Tensor]  # conv module path -> one number per output filter


def unit_scores(coupling: Coupling, stats: FilterStats) -> Scores:
    """Score of each unit = Σ over its producing filters (path, index) of `stats[path][index]` (0 if unseen)."""
    scores: Scores = {}
    for group in coupling.groups.values():
        s = torch.zeros(len(group), dtype=torch.float64)
        for u, unit in enumerate(group.units):
            for path, index in unit.sources:
                values = stats.get(path)
                if values is not None and index < len(values):
                    s[u] += float(values[index])
        scores[group.name] = s
    return scores


def add_stat(stats: FilterStats, path: str, values: Any) -> None:
    """stats[path] += values (float64, on the CPU), creating the entry on first use."""
    v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    stats[path] = stats[path] + v if path in stats else v.clone()


def conv_modules(model: nn.Module, paths: Iterable[str]) -> dict[str, nn.Module]:
    """The Conv2d and ConvTranspose2d modules of `model` at `paths` (output channel c is `out[:, c]` for both; other
    paths are left out)."""
    found = {}
    for path in paths:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            found[path] = module
    return found


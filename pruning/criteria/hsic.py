"""HSIC-Lasso per channel group (Yamada et al. 2014): which filters carry what the network computes from them.

For each prunable group:
- samples: every cell of a `pool` x `pool` grid of every calibration image (a conv is local, so a filter's pooled
  activation in a cell is compared with the target in the same cell; n = images · pool²);
- features: each unit's activations after its BatchNorm and activation, one dimension per producing filter (all
  of a coupled unit's producers, not the first); a `ConvTranspose2d` is hooked like a conv;
- target: if the group feeds one chain of single consumers that ends in a protected output conv (a head branch),
  that conv's raw output (the branch's own logits); otherwise the outputs of the convs that consume the group,
  each consumer weighted equally;
- score: the group's Block HSIC Lasso path (pruning.criteria.hsic_lasso.hsic_path_scores): the λ at which a unit
  enters the non-negative Lasso path, then the KKT gradient for units that never enter; a full order, no ties.

Scores are `GroupwiseScores`: path λs of different groups solve different problems, so plans give each group the
same fraction (its budget) and HSIC chooses within it, never ranking groups together (issue 17: a global ranking of
the coefficients cut the head's 32-channel convs by 50-83% and left the backbone alone).  `threshold=t` keeps each
group's support at λ = t (one λ for all layers); t = 0 removes the units outside the support at λ = 0.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

import fxgraph

from ..coupling import IN, Coupling, Group
from ..errors import PruningError
from ..criterion import GroupwiseScores, Scores
from . import distributed
from .calibration import Calibration
from .hsic_lasso import hsic_path_scores
from .progress import progress
from .stats import conv_modules


def _module_of(param: str) -> str:
    return param.rsplit(".", 1)[0]


def consumers(group: Group) -> set[str]:
    """Module paths of the filters that read the group's channels (its `in` touches)."""
    return {_module_of(t.param) for u in group.units for t in u.touches if t.role == IN}


def targets(coupling: Coupling) -> dict[str, tuple[str, ...]]:
    """For each prunable group, the filters whose outputs are its HSIC target: the protected output conv at the
    end of a chain of single consumers (a head branch's logits), else the group's own consumers."""
    produces: dict[str, list[Group]] = defaultdict(list)
    for g in coupling.groups.values():
        for path in g.sources:
            produces[path].append(g)
    out: dict[str, tuple[str, ...]] = {}
    for group in coupling.groups.values():
        if not group.prunable:
            continue
        direct = consumers(group)
        chain, seen = direct, set()
        while len(chain) == 1 and not seen & chain:
            (module,) = chain
            seen.add(module)
            made = produces.get(module, [])
            if made and all(not g.prunable for g in made):  # an output conv: the branch's raw logits
                direct = chain
                break
            chain = set().union(*(consumers(g) for g in made)) if made else set()
        out[group.name] = tuple(sorted(direct))
    return out


def _activated(model: nn.Module, path: str) -> nn.Module:
    """The module whose output is filter `path`'s channels after BatchNorm and activation: the ultralytics `Conv`
    holding it (`act(bn(conv(x)))`, fused or not), else the filter itself (a bare Conv2d or ConvTranspose2d)."""
    module = model.get_submodule(path)
    parent_path, _, leaf = path.rpartition(".")
    if parent_path and leaf == "conv":
        parent = model.get_submodule(parent_path)
        if getattr(parent, "conv", None) is module and hasattr(parent, "act"):
            return parent
    return module


def _cells(t: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N·size², C): the channels' mean over each cell of a size x size grid, one row per cell."""
    pooled = F.adaptive_avg_pool2d(t.float(), size)
    return pooled.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _weighted_target(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenated target (n, ΣD): each dimension standardised, each consumer's block scaled to unit total variance
    so a wide consumer does not outweigh a narrow one; constant dimensions are dropped."""
    parts = []
    for b in blocks:
        b = b.double()
        std = b.std(0)
        live = std > 1e-6 * b.abs().amax(0).clamp_min(1e-30)
        if live.any():
            z = (b[:, live] - b[:, live].mean(0)) / std[live]
            parts.append(z / int(live.sum()) ** 0.5)
    return torch.cat(parts, 1) if parts else torch.zeros(blocks[0].shape[0], 1, dtype=torch.float64)


class HSIC:
    """HSIC-Lasso path scores per group (see the module docstring).  `lam`: where the path stops (0: followed to
    the end); `pool`: the grid of cells per image; `block`, `perms`: Block HSIC Lasso's block size and number of
    random partitions (Climente-González et al. 2019; pyHSICLasso's defaults 20 and 3); `ridge`: the elastic-net
    L2 weight (Q's diagonal is 1): near-duplicate filters enter together instead of one at random, which is what
    makes the order repeat on other images (split-half Spearman, random yolov8n at 64 px, 32 images per half:
    median 0.94 over groups with ridge 2, 0.73 with ridge 1e-8)."""

    name = "hsic"

    def __init__(self, calibration: Calibration, *, lam: float = 0.0, pool: int = 4, block: int = 20,
                 perms: int = 3, ridge: float = 2.0) -> None:
        if not (isinstance(lam, (int, float)) and lam >= 0):
            raise PruningError(f"HSIC lam must be a number >= 0 (where the Lasso path stops); got {lam!r}")
        if not (isinstance(pool, int) and pool >= 1 and isinstance(block, int) and block >= 2
                and isinstance(perms, int) and perms >= 1):
            raise PruningError(f"HSIC needs pool >= 1, block >= 2, perms >= 1 (integers); got {pool}, {block}, {perms}")
        if not (isinstance(ridge, (int, float)) and ridge > 0):
            raise PruningError(f"HSIC ridge must be a number > 0 (the elastic-net weight); got {ridge!r}")
        self.calibration, self.lam, self.pool, self.block, self.perms = calibration, float(lam), pool, block, perms
        self.ridge = float(ridge)

    def features(self, graph: fxgraph.FlatGraph, paths: set[str]) -> dict[str, torch.Tensor]:
        """Filter path -> its activated outputs as cells (n, C) over the calibration images (gathered across ranks)."""
        model = copy.deepcopy(graph.model).float().to(graph.device).eval()
        facts = graph.facts
        if facts is not None and facts.branch is not None:  # YOLO26: run the branch the graph was traced on
            model.model[facts.head_layer].end2end = facts.branch == "one2one"
        feats: dict[str, list[torch.Tensor]] = defaultdict(list)
        handles = []
        for path in conv_modules(model, paths):
            def hook(_m, _inp, out, path=path):
                feats[path].append(_cells(out.detach(), self.pool).cpu())
            handles.append(_activated(model, path).register_forward_hook(hook))
        try:
            with torch.no_grad():
                for batch in progress(self.calibration.batches, "hsic features"):
                    model(batch["img"].to(graph.device).float() / 255)
        finally:
            for h in handles:
                h.remove()
        return {k: distributed.all_gather_cat(torch.cat(v)) for k, v in sorted(feats.items())}

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        goals = targets(coupling)
        groups = [coupling.groups[name] for name in goals]
        paths = {p for g in groups for u in g.units for p, _ in u.sources} | {p for t in goals.values() for p in t}
        feats = self.features(graph, paths)
        n = next(iter(feats.values())).shape[0] if feats else 0
        if n < 3 * self.pool ** 2:
            raise PruningError(f"HSIC-Lasso needs at least 3 calibration images; got {n // self.pool ** 2}")
        scores = GroupwiseScores(
            {name: torch.zeros(len(g), dtype=torch.float64) for name, g in coupling.groups.items()})
        for group in progress(groups, "hsic lasso"):
            blocks = [feats[t] for t in goals[group.name] if t in feats]
            width = max(len(u.sources) for u in group.units)
            x = torch.zeros(len(group), n, max(width, 1))
            for u, unit in enumerate(group.units):
                for k, (path, index) in enumerate(unit.sources):
                    if path in feats and index < feats[path].shape[1]:
                        x[u, :, k] = feats[path][:, index]
            if not blocks:  # the channels feed no filter: nothing to carry, order by activity alone
                scores[group.name] = -2 + x.std(1).sum(1).double().tanh()
                continue
            scores[group.name] = hsic_path_scores(x, _weighted_target(blocks), lam=self.lam, block=self.block,
                                                  perms=self.perms, ridge=self.ridge)
        return scores

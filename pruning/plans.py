"""Pruning plans: which units of which channel groups to remove, how they are chosen, and their validation.

A `Plan` names groups (see pruning.coupling) and unit indices inside each.  `make_plan` chooses them from a
criterion's scores, either by one global ranking over every prunable group (the paper's Algorithm 2: scores are
normalised per group, all units are sorted together, the lowest `ratio` of channels go) or by a ratio per
layer.  Groups that a split ties together (the halves of a C2f's `chunk(2)`) are ranked as one block that loses
equally many channels in each group, so the block's own forward code stays valid; the q/k groups of one
attention's heads form such a block too (every head keeps the same key_dim: "attention constraint 3").
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch

import fxgraph

from .coupling import Coupling, Group
from .criterion import Criterion, check_scores, criterion_name, get_criterion
from .errors import (
    EmptyLayerError,
    PlanError,
    ProtectedChannelError,
    RatioError,
    SplitConstraintError,
    StalePlanError,
    UnknownLayerError,
)
from .policy import scope_layers


@dataclass
class Plan:
    """Units to remove, per group name (indices within the group, i.e. within the layer's channels).

    `sizes` records the group sizes the plan was made for, so a plan applied to another architecture fails
    loudly; `settings` records how it was made.  A plan is plain data: `to_json`/`from_json` round-trip it.
    """

    remove: dict[str, tuple[int, ...]]
    sizes: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    blocks: tuple[str, ...] = ()  # residual blocks to remove (pruning.blocks names, e.g. 'model.4.m.0')

    @property
    def num_removed(self) -> int:
        """Number of units removed (a unit is one channel of each of its producing filters)."""
        return sum(len(v) for v in self.remove.values())

    def to_json(self) -> str:
        return json.dumps({"remove": {k: list(v) for k, v in self.remove.items()}, "sizes": self.sizes,
                           "settings": self.settings, "blocks": list(self.blocks)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        return cls(remove={k: tuple(v) for k, v in data["remove"].items()}, sizes=data.get("sizes", {}),
                   settings=data.get("settings", {}), blocks=tuple(data.get("blocks", ())))

    def __str__(self) -> str:
        kept = {k: self.sizes.get(k, 0) - len(v) for k, v in self.remove.items() if v}
        lines = [f"Plan: remove {self.num_removed} channel units from {len(kept)} groups ({self.settings})"]
        lines += [f"  {k}: {self.sizes.get(k, '?')} -> {n}" for k, n in kept.items()]
        lines += [f"  remove residual block {b}" for b in self.blocks]
        return "\n".join(lines)


def check_ratio(ratio: float, what: str = "ratio") -> float:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 <= float(ratio) < 1.0:
        raise RatioError(f"{what} must be in [0, 1) (the fraction of channels to remove); got {ratio!r}")
    return float(ratio)


def make_plan(
    graph: fxgraph.FlatGraph,
    coupling: Coupling,
    *,
    ratio: float | None = None,
    layer_ratios: Mapping[int | str, float] | None = None,
    scope: str | Iterable[int] = "all",
    criterion: str | Criterion = "l2",
    min_channels: int = 1,
    round_to: int = 8,
    global_ranking: bool = True,
    normalize: bool = True,
    threshold: float | None = None,
) -> Plan:
    """Choose the units to remove.

    `ratio`: fraction of the prunable channels in scope to remove — ranked globally across layers when
    `global_ranking` (the default), else the same fraction of every group (see below).  `layer_ratios`: a fraction per
    ultralytics layer index or per group name / module-path prefix ('model.4', 'model.22.cv2.0.0.conv'),
    overriding `ratio` there.  `scope`: 'all', 'backbone' (`facts.backbone`) or layer indices.  Every group keeps
    at least `min_channels` channels, and the number it keeps is rounded up to a multiple of `round_to` (8 by
    default, as the job's: widths that are multiples of 8 run faster on every runtime; 1 for exact ratios).  The
    q/k groups of an attention's heads are rounded per head's key_dim, as the head layout decides.
    `threshold` (instead of `ratio`): remove every unit in scope whose raw score is <= threshold, e.g. 0 for the
    HSIC-Lasso coefficients of filters that carry nothing the others do not (coupled groups lose the same number).
    Scores that are comparable only within a group (`criterion.GroupwiseScores`, e.g. HSIC-Lasso) are never
    ranked globally: `ratio` then removes the same fraction of every group, rounded down per group to what
    `round_to` and `min_channels` allow, with the fraction chosen so that `ratio` of the channels go in all
    (`_uniform_counts`).
    """
    if threshold is not None:
        if ratio is not None or layer_ratios:
            raise PlanError("give either `threshold` or `ratio` / `layer_ratios`, not both")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise PlanError(f"threshold must be a finite number; got {threshold!r}")
    elif ratio is None and not layer_ratios:
        raise PlanError("give a global `ratio` in [0, 1), `layer_ratios` {layer: ratio} or a score `threshold`")
    if ratio is not None:
        check_ratio(ratio)
    if not isinstance(min_channels, int) or min_channels < 1:
        raise PlanError(f"min_channels must be an integer >= 1; got {min_channels!r}")
    if not isinstance(round_to, int) or round_to < 1:
        raise PlanError(f"round_to must be an integer >= 1; got {round_to!r}")
    layers_in_scope = scope_layers(scope, graph)
    overrides = _resolve_layer_ratios(layer_ratios or {}, graph, coupling, layers_in_scope)
    blocks = [b for b in coupling.all_blocks() if _in_scope(b, coupling, layers_in_scope)]
    if layers_in_scope is not None and not blocks:
        raise PlanError(f"scope {scope!r} holds no prunable channel group (layers {sorted(layers_in_scope)} have only "
                        "protected or unprunable channels); widen the scope")
    crit = get_criterion(criterion)
    groups = [coupling.groups[n] for b in blocks for n in b]
    scores = crit(graph, coupling)
    check_scores(scores, groups)
    global_ranking = global_ranking and getattr(scores, "global_ranking", True)  # see criterion.GroupwiseScores
    order = {n: torch.argsort(scores[n], stable=True) for n in (g.name for g in groups)}

    counts: dict[tuple[str, ...], int] = {}
    local = [b for b in blocks if threshold is None and (b in overrides or ratio is None)]
    for block in local:
        r = overrides.get(block, 0.0)
        size = len(coupling.groups[block[0]])
        counts[block] = min(math.floor(r * size + 1e-9), _cap(size, min_channels))
    if threshold is None and ratio and not global_ranking:
        uniform = [b for b in blocks if b not in counts]
        counts.update(_uniform_counts(uniform, coupling, scores, ratio, min_channels, round_to))
    if threshold is not None:
        for block in blocks:
            below = min(int((scores[name] <= threshold).sum()) for name in block)
            counts[block] = min(below, _cap(len(coupling.groups[block[0]]), min_channels))
    ranked = [b for b in blocks if b not in counts]
    if ranked and ratio:
        counts.update(_global_counts(ranked, coupling, scores, ratio, min_channels, normalize))
    remove: dict[str, tuple[int, ...]] = {}
    for block, n in counts.items():
        size = len(coupling.groups[block[0]])
        n = _round_kept(size, n, round_to)
        for name in block:
            if n > 0:
                remove[name] = tuple(sorted(int(i) for i in order[name][:n]))
    plan = Plan(
        remove=remove,
        sizes={g.name: len(g) for g in coupling.groups.values()},
        settings={
            "ratio": ratio, "layer_ratios": {str(k): v for k, v in (layer_ratios or {}).items()},
            "scope": scope if isinstance(scope, str) else sorted(layers_in_scope or ()),
            "criterion": criterion_name(crit),
            "min_channels": min_channels, "round_to": round_to, "global_ranking": global_ranking,
            "threshold": threshold,
        },
    )
    check_plan(plan, coupling)
    return plan


def _cap(size: int, min_channels: int) -> int:
    """Most channels a group of `size` may lose."""
    return max(0, size - max(min_channels, 1))


def _round_kept(size: int, n_remove: int, round_to: int) -> int:
    """Remove fewer so that the kept count is a multiple of `round_to` (or all channels are kept)."""
    if round_to <= 1 or n_remove <= 0:
        return max(n_remove, 0)
    kept = min(size, math.ceil((size - n_remove) / round_to) * round_to)
    return size - kept


def _removal_steps(size: int, min_channels: int, round_to: int) -> list[int]:
    """The channel counts a group of `size` may lose, ascending: its kept count stays a multiple of `round_to`
    (as `_round_kept` rounds) and at least `min_channels`."""
    cap = _cap(size, min_channels)
    return sorted({_round_kept(size, n, round_to) for n in range(1, cap + 1)} - {0})


def _uniform_counts(blocks, coupling: Coupling, scores, ratio: float, min_channels: int, round_to: int):
    """The same fraction θ of every group, each rounded down to a count it may lose (`_removal_steps`), with θ the
    smallest that removes `ratio` of the channels of `blocks`.

    Rounding each group's `ratio` down on its own made the total a staircase: with round_to=8, groups of 32-256
    channels all reach their next multiple of 8 at the same few ratios, so a GFLOPs target could be bisected only
    onto those steps (HSIC-Lasso removed 55% of GFLOPs for a 50% target).  Here every step of every group is one
    candidate keyed by the fraction of its group it reaches; taking candidates in that order until `ratio` of the
    channels are gone moves θ one group step at a time, so the total grows by one step, never by a staircase.
    Candidates reaching the same fraction go weakest first (mean score of the units they remove, over the group's
    mean), so the order is fixed and the total never shrinks as `ratio` grows.
    """
    candidates: list[tuple[float, float, int, int]] = []
    total = 0
    for b, block in enumerate(blocks):
        size = len(coupling.groups[block[0]])
        total += size * len(block)
        weakest = _weakest_first(block, scores, normalize=True)
        previous = 0
        for n in _removal_steps(size, min_channels, round_to):
            candidates.append((n / size, float(weakest[previous:n].mean()), b, n))
            previous = n
    candidates.sort()
    target = ratio * total
    counts = {block: 0 for block in blocks}
    removed = 0
    for _, _, b, n in candidates:
        if removed >= target - 1e-9:
            break
        block = blocks[b]
        removed += (n - counts[block]) * len(block)
        counts[block] = n
    return counts


def _weakest_first(block: tuple[str, ...], scores, normalize: bool) -> torch.Tensor:
    """The scores of a block's units, weakest first: each group's scores sorted (over their mean |score| when
    `normalize`, so groups of different scales compare), averaged over the block's groups (the k-th weakest unit of
    each group is removed together)."""
    per_group = []
    for name in block:
        s = scores[name].double()
        if normalize:
            mean = s.abs().mean()
            s = s / mean if mean > 0 else s
        per_group.append(torch.sort(s).values)
    return torch.stack(per_group).mean(0)


def _global_counts(blocks, coupling: Coupling, scores, ratio: float, min_channels: int, normalize: bool):
    """Algorithm 2: sort all units of all blocks by normalised score, remove the lowest `ratio` of channels."""
    candidates: list[tuple[float, int, int]] = []
    total = 0
    for b, block in enumerate(blocks):
        size = len(coupling.groups[block[0]])
        total += size * len(block)
        combined = _weakest_first(block, scores, normalize)  # k-th weakest unit of each group, removed together
        for k in range(_cap(size, min_channels)):
            candidates.append((float(combined[k]), k, b))
    candidates.sort()
    target = round(ratio * total)
    counts = {block: 0 for block in blocks}
    removed = 0
    for _, _, b in candidates:
        if removed >= target:
            break
        counts[blocks[b]] += 1
        removed += len(blocks[b])
    return counts


def _in_scope(block: tuple[str, ...], coupling: Coupling, layers: frozenset[int] | None) -> bool:
    groups = [coupling.groups[n] for n in block]
    if any(not g.prunable for g in groups):
        return False
    return layers is None or all(g.layers and g.layers <= layers for g in groups)


def _matches(group: Group, key: int | str) -> bool:
    if isinstance(key, int):
        return group.layer == key
    return group.name == key or any(
        s == key or s.startswith(key + ".") or s.startswith(key + "[") for s in (group.name, *group.sources)
    )


def _resolve_layer_ratios(layer_ratios, graph, coupling: Coupling, layers_in_scope) -> dict[tuple[str, ...], float]:
    """{layer or name: ratio} -> {block: ratio}, with our errors for unknown, protected or out-of-scope keys."""
    num_layers = len(graph.model.model)
    out: dict[tuple[str, ...], float] = {}
    for key, r in layer_ratios.items():
        check_ratio(r, f"ratio of layer {key!r}")
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise UnknownLayerError(f"layer key {key!r} must be a layer index or a module path")
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        if isinstance(key, int) and not 0 <= key < num_layers:
            raise UnknownLayerError(f"layer {key} does not exist: the model has layers 0-{num_layers - 1}")
        matched = [g for g in coupling.groups.values() if _matches(g, key)]
        if not matched and isinstance(key, int):
            raise PlanError(f"layer {key} ({type(graph.model.model[key]).__name__}) has no filters of its own to "
                            "prune; its channels belong to the layers that produce them")
        if not matched:
            hint = difflib.get_close_matches(str(key), list(coupling.groups), n=3)
            raise UnknownLayerError(f"no channel group matches {key!r}" + (f"; did you mean {hint}?" if hint else ""))
        prunable = [g for g in matched if g.prunable]
        if not prunable:
            what = f"layer {key} ({type(graph.model.model[key]).__name__})" if isinstance(key, int) else repr(key)
            reasons = "; ".join(dict.fromkeys(g.protected or "" for g in matched))
            raise ProtectedChannelError(f"{what} has no prunable channels: {reasons}")
        for g in prunable:
            block = coupling.block_of(g.name)
            if not _in_scope(block, coupling, layers_in_scope):
                raise PlanError(f"{g.name} (layer {g.layer}) is outside the pruning scope {sorted(layers_in_scope or [])}")
            out[block] = min(r, out.get(block, r))
    return out


def check_plan(plan: Plan, coupling: Coupling) -> None:
    """Raise our PlanError subclasses unless `plan` can be applied to a graph with this coupling."""
    for name, indices in plan.remove.items():
        group = coupling.groups.get(name)
        if group is None:
            hint = difflib.get_close_matches(name, list(coupling.groups), n=3)
            raise UnknownLayerError(f"the plan names group {name!r}, which this model does not have"
                                    + (f"; did you mean {hint}?" if hint else ""))
        if name in plan.sizes and plan.sizes[name] != len(group):
            raise StalePlanError(f"group {name} has {len(group)} channels here but the plan was made for "
                                 f"{plan.sizes[name]}: make a new plan for this model")
        if indices and not group.prunable:
            raise ProtectedChannelError(f"group {name} is protected ({group.protected}); it cannot be pruned")
        if len(set(indices)) != len(indices) or any(not 0 <= int(i) < len(group) for i in indices):
            raise PlanError(f"group {name}: unit indices must be distinct and in [0, {len(group)}); got {indices}")
        if len(indices) >= len(group):
            raise EmptyLayerError(f"the plan removes all {len(group)} channels of {name}; keep at least one "
                                  "(lower the ratio or raise min_channels)")
    for block in coupling.blocks:
        counts = {n: len(plan.remove.get(n, ())) for n in block}
        if len(set(counts.values())) > 1:
            why = coupling.block_reasons.get(block)
            if why is not None:  # the q/k groups of one attention's heads
                raise SplitConstraintError(f"{why}; the plan removes {counts}")
            raise SplitConstraintError(f"groups {list(block)} are the parts of one chunk and must lose equally many "
                                       f"channels; the plan removes {counts}")

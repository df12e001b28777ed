"""`attribute(module, inputs, baselines, target_fn)`: the generic DeepSHAP layer under `explain`, for any network
that fxgraph can trace into known ops (a small CNN with ReLU, max-pool and a linear layer as much as YOLOv8)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import fx, nn

import fxgraph

from .composites import RulesSpec
from .engine import RelevanceGraph
from .errors import RelpropError, RuleError


def relevance_graph(module: Any, example: torch.Tensor, rules: RulesSpec = None) -> RelevanceGraph:
    """A RelevanceGraph for an nn.Module (traced with fxgraph), an annotated GraphModule, a FlatGraph, or itself."""
    if isinstance(module, RelevanceGraph):
        return module
    if isinstance(module, fxgraph.FlatGraph):
        return RelevanceGraph(module.module, rules)
    if isinstance(module, fx.GraphModule) and all(fxgraph.info(n, None) for n in module.graph.nodes):
        return RelevanceGraph(module, rules)
    if isinstance(module, nn.Module):
        try:
            gm = fxgraph.trace_module(module, example.detach())
        except fxgraph.UnsupportedOpError as exc:
            raise RuleError(f"{type(module).__name__} holds an op with no relevance rule: {exc}") from exc
        return RelevanceGraph(gm, rules)
    raise RelpropError(f"cannot attribute through a {type(module).__name__}; give an nn.Module, a GraphModule traced "
                       "by fxgraph, a FlatGraph or a RelevanceGraph")


def attribute(
    module: Any,
    inputs: torch.Tensor,
    baselines: torch.Tensor | float | None,
    target_fn: Callable[[Any], torch.Tensor],
    *,
    rules: RulesSpec = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSHAP attributions of `target_fn(module(inputs))` against `baselines`, and the completeness delta.

    inputs     (N, ...) batch of inputs.
    baselines  (N, ...) one reference per input, (1, ...) or a number (shared by all), or (K, N, ...) / (K, 1, ...):
               K references per input, whose attributions are averaged (DeepSHAP's expectation over a background).
    target_fn  maps the module's output (the tensor, or the tuple when it returns several) to (N,) scalars; it should
               be a selection or sum of outputs (e.g. ``lambda y: y[:, 3]``): completeness is exact for those.

    Returns ``attr`` shaped like `inputs`, with Σ attr[n] = target(x_n) − mean_k target(x0_kn) + delta[n], and
    ``delta`` (N,), ≈ 0 up to rounding.
    """
    if baselines is None:
        baselines = 0.0
    if not isinstance(baselines, torch.Tensor):
        baselines = torch.full((1, *inputs.shape[1:]), float(baselines), dtype=inputs.dtype, device=inputs.device)
    refs_all = baselines if baselines.dim() == inputs.dim() + 1 else baselines.unsqueeze(0)
    if refs_all.shape[2:] != inputs.shape[1:] or refs_all.shape[1] not in (1, inputs.shape[0]):
        raise RelpropError(f"baselines of shape {tuple(baselines.shape)} do not fit inputs of shape {tuple(inputs.shape)}:"
                           " use (N, ...), (1, ...) or (K, N, ...)")
    graph = relevance_graph(module, inputs, rules)

    def target(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        value = target_fn(outputs[0] if len(outputs) == 1 else outputs)
        batch = outputs[0].shape[0]  # N for the inputs, 1 or N for the references
        if not isinstance(value, torch.Tensor) or value.shape != (batch,):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise RelpropError(f"target_fn must return a tensor of shape ({batch},), one scalar per example; got {got}")
        return value

    k = refs_all.shape[0]
    attr = torch.zeros_like(inputs)
    score = reference_score = None
    for refs_k in refs_all:
        result = graph.relevance(inputs, graph.reference(refs_k.to(inputs)), target)
        attr = attr + result.attribution / k
        score = result.score
        reference_score = result.reference_score / k + (0 if reference_score is None else reference_score)
    delta = attr.flatten(1).sum(-1) - (score - reference_score)
    return attr.detach(), delta.detach()

"""What every rule shares: the `Rule` base class, a rule `Bound` to one node, and the rules that need no Function
(`Gradient`, `Identity`).

Conservation law every rule's autograd Function keeps (x0: the reference's activation at the same node, broadcast
over x; m_y = ∂target/∂y from the layer above):   Σ m_x·Δx = Σ m_y·Δy,   Δx = x − x0,  Δy = y − y0.
Chained through autograd with the plain gradient on linear ops, m_x·Δx at the input sums to f(x) − f(x0).
Every backward uses out-of-place tensor ops only, so it also runs under vmap and torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import fx

from fxgraph import info, ops

from ..errors import RuleError

# |Δx| below which a secant Δy/Δx is replaced by the derivative (at x0 or the midpoint); about sqrt(machine epsilon).
_EPS = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def secant_eps(dtype: torch.dtype) -> float:
    """The |Δx| threshold of the rescale rules for a dtype."""
    return _EPS.get(dtype, 1e-5)

aten = torch.ops.aten


@dataclass(frozen=True)
class Bound:
    """A rule bound to one node: the op to run, its kind (from the node record), the positions of the node's data
    (input-dependent) arguments, and the node's name."""

    rule: "Rule"
    target: Callable
    data: tuple[int, ...]
    name: str
    kind: str = ""

    def record(self, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
        return self.rule.record(self, args, kwargs)

    def explain(self, args: tuple, kwargs: dict, saved: tuple, eps: float) -> Any:
        return self.rule.explain(self, args, kwargs, saved, eps)


def bound(rule: "Rule", node: fx.Node) -> Bound:
    """`rule` bound to `node`, reading the node's kind from its record once."""
    data = tuple(i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and info(a).kind not in ops.NON_DATA)
    return Bound(rule, node.target, data, node.name, info(node).kind)


class Rule:
    """Base class.  Subclasses set `kinds` (the op kinds they know) and implement `record` and `explain`."""

    kinds: frozenset[str] = frozenset()

    def bind(self, node: fx.Node) -> Bound | None:
        """The rule bound to `node`, or None when the node needs no rewrite; RuleError if the rule cannot apply."""
        kind = info(node).kind
        if self.kinds and kind not in self.kinds:
            raise RuleError(
                f"{type(self).__name__} cannot explain node {node.name} of kind '{kind}' "
                f"({info(node).module_path or 'no module'}); it knows {sorted(self.kinds)}"
            )
        return bound(self, node)

    def record(self, b: Bound, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
        """Run the op on the reference; return its output and the tensors `explain` needs."""
        raise NotImplementedError

    def explain(self, b: Bound, args: tuple, kwargs: dict, saved: tuple, eps: float) -> Any:
        """Run the op on the input through the rule's autograd Function."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gradient(Rule):
    """The plain gradient, exact for every op that is linear in its data inputs (no rewrite needed)."""

    def bind(self, node: fx.Node) -> Bound | None:
        return None


class Identity(Gradient):
    """Ops that compute nothing (kind "identity"): the plain gradient, and `detach` is run as the identity so that
    relevance flows through it: we explain what the network computes, not where training stops gradients."""

    def bind(self, node: fx.Node) -> Bound | None:
        if getattr(node.target, "overloadpacket", None) is not aten.detach:
            return None
        return bound(self, node)

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), ()

    def explain(self, b, args, kwargs, saved, eps):
        return args[0].view_as(args[0])


def sum_to(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Reduce a broadcast gradient back to `shape` (like autograd does for broadcasting ops)."""
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    lead = t.dim() - len(shape)
    if lead:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t

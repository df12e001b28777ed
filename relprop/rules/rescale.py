"""Rescale (DeepLIFT) for an elementwise nonlinearity y = f(x):   m_x = m_y·Δy/Δx,
and f' where |Δx| ≤ eps·(1 + |x0|): f'(x0) for a smooth f, f'((x + x0)/2) otherwise.  f'(x0) and the bound
eps·(1 + |x0|) are computed once per reference pass, so an explained pass costs op(x), Δy, Δx, Δy/Δx, |Δx|, ≤ and
a select per node (7 ops; 9 with the bound formed from |x| per call).

Kinds are registered with their derivative (`Rescale.register`); SiLU, sigmoid, ReLU, sin and cos (OBB's angle
decode: the secant (sin x − sin x0)/(x − x0), exact like SiLU's) are built in.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import fx

from ..errors import RuleError
from .base import Bound, Rule, bound, secant_eps

Derivative = Callable[[torch.Tensor], torch.Tensor]


def cos_derivative(z: torch.Tensor) -> torch.Tensor:
    return -torch.sin(z)


def silu_derivative(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def sigmoid_derivative(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def relu_derivative(z: torch.Tensor) -> torch.Tensor:
    return (z > 0).to(z.dtype)


def secant(dy: torch.Tensor, dx: torch.Tensor, tangent: Derivative | torch.Tensor, x: torch.Tensor,
           x0: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Δy/Δx elementwise, and the derivative where |Δx| ≤ eps·(1 + |x|): `tangent` itself if it is a tensor (f'(x0)),
    else `tangent` evaluated at the midpoint (x + x0)/2.  A tensor `eps` is the bound itself, eps·(1 + |x0|) from the
    reference pass (`small_bound`): the same test up to eps·|Δx| ≤ eps², two ops fewer per call.

    The threshold is relative so that a secant never divides a rounding error of y by a tiny Δx.  Both are computed
    everywhere and selected with `where`: no host synchronisation.  `dy` is overwritten (a temporary of the caller).
    """
    slope = dy.div_(dx)
    if isinstance(eps, torch.Tensor):
        small = dx.abs() <= eps
    else:
        small = dx.abs().sub_(x.abs(), alpha=eps) <= eps  # |Δx| − eps·|x| ≤ eps: one op fewer than eps·(1 + |x|)
    return torch.where(small, tangent if isinstance(tangent, torch.Tensor) else tangent((x + x0) / 2), slope)


def small_bound(x0: torch.Tensor) -> torch.Tensor:
    """eps·(1 + |x0|) for x0's dtype: below it |Δx| takes the derivative instead of the secant (`secant`)."""
    eps = secant_eps(x0.dtype)
    return x0.abs().mul_(eps).add_(eps)


class RescaleFn(torch.autograd.Function):
    """y = op(x);  backward  m_x = m_y · secant(Δy, Δx, tangent)  (see `secant`).

    With `tangent` = f'(x0) (a smooth f): where |Δx| ≤ eps·(1 + |x|), eps ≈ sqrt(machine epsilon), f'(x0)·Δx differs
    from Δy by at most max|f''|·Δx²/2, below the rounding of y, and no second f' is evaluated per call.
    """

    @staticmethod
    def forward(ctx, x, x0, y0, op, tangent, eps):  # noqa: D102 - the op itself
        y = op(x)
        ctx.save_for_backward(secant(y - y0, x - x0, tangent, x, x0, eps))
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None, None, None, None


class Rescale(Rule):
    """DeepLIFT's rescale rule for an elementwise op (see the module docstring and `RescaleFn`).

    `derivative` overrides the registered derivative of the node's kind (needed for an unregistered kind).
    """

    DERIVATIVES: dict[str, Derivative] = {
        "silu": silu_derivative,
        "sigmoid": sigmoid_derivative,
        "relu": relu_derivative,
        "sin": torch.cos,
        "cos": cos_derivative,
    }
    # smooth kinds take their tangent at the reference, f'(x0), once per reference pass; ReLU keeps the midpoint
    # (its kink: f'(0) = 0 would lose Δy = x for x0 = 0 < x ≤ eps)
    SMOOTH: frozenset[str] = frozenset({"silu", "sigmoid", "sin", "cos"})
    kinds = frozenset(DERIVATIVES)

    @classmethod
    def register(cls, kind: str, derivative: Derivative, *, smooth: bool = True) -> None:
        """Explain op kind `kind` (an elementwise y = f(x)) with this rule, f' given by `derivative`; `smooth` says f'
        is continuous (tangent taken at x0, once per reference) rather than kinked (tangent at the midpoint)."""
        cls.DERIVATIVES[kind] = derivative
        cls.kinds = frozenset(cls.DERIVATIVES)
        cls.SMOOTH = cls.SMOOTH | {kind} if smooth else cls.SMOOTH - {kind}

    def __init__(self, derivative: Derivative | None = None):
        self.derivative = derivative

    def bind(self, node: fx.Node) -> Bound | None:
        return super().bind(node) if self.derivative is None else bound(self, node)

    def _derivative(self, b: Bound) -> Derivative:
        if self.derivative is not None:
            return self.derivative
        if b.kind not in self.DERIVATIVES:
            raise RuleError(f"node {b.name}: no derivative registered for kind '{b.kind}' (Rescale.register)")
        return self.DERIVATIVES[b.kind]

    def record(self, b, args, kwargs):
        y = b.target(*args, **kwargs)
        x0 = args[0]
        tangent = self._derivative(b)(x0) if self.derivative is None and b.kind in self.SMOOTH else None
        return y, (x0, y, tangent, small_bound(x0))

    def explain(self, b, args, kwargs, saved, eps):
        x0, y0, tangent, limit = saved
        rest = args[1:]

        def op(x):
            return b.target(x, *rest, **kwargs)

        return RescaleFn.apply(args[0], x0, y0, op, self._derivative(b) if tangent is None else tangent, limit)

"""Products of two data tensors, split exactly and symmetrically (the two-player Shapley value):

    product     y = u·v      Δy = ½(v + v0)·Δu + ½(u + u0)·Δv
    quotient    y = u/v = u·w, w = 1/v:   the product on (u, w) and the exact secant of the reciprocal Δw/Δv = −w·w0
    matmul      y = A·B      Δy = ½ΔA·(B + B0) + ½(A + A0)·ΔB   (attention's q·k and v·attn)

A product with a parameter, a constant or a number is linear and keeps the plain gradient.
"""

from __future__ import annotations

import torch
from torch import fx

from ..errors import RuleError
from .base import Bound, Rule, sum_to


class ProductFn(torch.autograd.Function):
    """y = u·v;  backward  m_u = m_y·(v + v0)/2,  m_v = m_y·(u + u0)/2."""

    @staticmethod
    def forward(ctx, u, v, u0, v0):  # noqa: D102
        ctx.save_for_backward(u + u0, v + v0)
        ctx.shapes = (u.shape, v.shape)
        return u * v

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        usum, vsum = ctx.saved_tensors
        su, sv = ctx.shapes
        return sum_to(grad * vsum / 2, su), sum_to(grad * usum / 2, sv), None, None


class QuotientFn(torch.autograd.Function):
    """y = u/v;  backward  m_u = m_y·(w + w0)/2,  m_v = m_y·(u + u0)/2·(−w·w0),  w = 1/v."""

    @staticmethod
    def forward(ctx, u, v, u0, v0):  # noqa: D102
        w, w0 = 1 / v, 1 / v0
        ctx.save_for_backward(u + u0, w + w0, -(w * w0))
        ctx.shapes = (u.shape, v.shape)
        return u / v

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        usum, wsum, dwdv = ctx.saved_tensors
        su, sv = ctx.shapes
        return sum_to(grad * wsum / 2, su), sum_to(grad * usum / 2 * dwdv, sv), None, None


class MatMulFn(torch.autograd.Function):
    """y = A·B (batched, broadcast);  backward: the vector-Jacobian products of A ↦ A·(B + B0)/2 and
    B ↦ (A + A0)·B/2 (both linear, so their VJPs are matmul's at any point)."""

    @staticmethod
    def forward(ctx, a, b, a0, b0):  # noqa: D102
        ctx.save_for_backward(a + a0, b + b0)
        ctx.shapes = (a.shape, b.shape)
        return torch.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        asum, bsum = ctx.saved_tensors
        sa, sb = ctx.shapes
        _, vjp_a = torch.func.vjp(lambda a: torch.matmul(a, bsum), torch.zeros(sa, dtype=grad.dtype, device=grad.device))
        _, vjp_b = torch.func.vjp(lambda b: torch.matmul(asum, b), torch.zeros(sb, dtype=grad.dtype, device=grad.device))
        return vjp_a(grad / 2)[0], vjp_b(grad / 2)[0], None, None


class _TwoTensors(Rule):
    """Binds only where both operands are data tensors (a product with a constant keeps the plain gradient)."""

    def bind(self, node: fx.Node) -> Bound | None:
        b = super().bind(node)
        if len(b.data) < 2:
            return None
        if b.data != (0, 1) or node.kwargs:
            raise RuleError(f"node {node.name} ({node.target}): unexpected arguments for a {self.what}")
        return b

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0], args[1])


class Shapley(_TwoTensors):
    """Product or quotient of two data tensors (`ProductFn`, `QuotientFn`)."""

    kinds = frozenset({"mul", "div"})
    what = "product of two tensors"

    def explain(self, b, args, kwargs, saved, eps):
        u0, v0 = saved
        return (ProductFn if b.kind == "mul" else QuotientFn).apply(args[0], args[1], u0, v0)


class MatMul(_TwoTensors):
    """Matrix product of two data tensors (`MatMulFn`)."""

    kinds = frozenset({"matmul"})
    what = "product of two matrices"

    def explain(self, b, args, kwargs, saved, eps):
        a0, b0 = saved
        return MatMulFn.apply(args[0], args[1], a0, b0)

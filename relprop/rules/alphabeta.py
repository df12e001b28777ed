"""LRP-αβ on DeepLIFT differences for a 2-D convolution, α − β = 1 (DetDSHAP's rule for the head's last convs).

With the contributions z_ij = w_ij·Δx_i split into positive and negative parts, z⁺_j = Σ_i z⁺_ij, z⁻_j = Σ_i z⁻_ij
(so Δy_j = z⁺_j + z⁻_j, the bias cancels):

    R_i = Σ_j ( α·z⁺_ij/z⁺_j − β·z⁻_ij/z⁻_j ) · m_yj·Δy_j,      m_x = R/Δx

Where z⁺_j or z⁻_j vanishes the plain gradient is used for output j, so the law holds exactly everywhere.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.nn import functional as F

from ..errors import RuleError
from .base import Bound, Rule

aten = torch.ops.aten


def conv_args(args: tuple) -> tuple[tuple, tuple]:
    """aten.conv2d's (input, weight, bias) and (stride, padding, dilation, groups) with their defaults filled in."""
    full = list(args) + [None, [1, 1], [0, 0], [1, 1], 1][len(args) - 2:]
    return tuple(full[:3]), tuple(full[3:7])


def split_contributions(dx: torch.Tensor, weight: torch.Tensor, args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(z⁺, z⁻): the positive and negative parts of Σ_i w_ij·Δx_i, per output j."""
    pos, neg = dx.clamp(min=0), dx.clamp(max=0)
    wp, wn = weight.clamp(min=0), weight.clamp(max=0)
    return F.conv2d(pos, wp, None, *args) + F.conv2d(neg, wn, None, *args), \
        F.conv2d(pos, wn, None, *args) + F.conv2d(neg, wp, None, *args)


class AlphaBetaConvFn(torch.autograd.Function):
    """y = conv2d(x);  backward: m_x = R/Δx of the module formula, the gradient where z⁺ or z⁻ vanishes."""

    @staticmethod
    def forward(ctx, x, x0, weight, bias, args, alpha, beta, eps):  # noqa: D102
        dx = x - x0
        zp, zn = split_contributions(dx, weight, args)
        ctx.save_for_backward(weight, zp, zn, (zp <= eps) | (zn >= -eps), dx > 0, dx < 0)
        ctx.conv_args, ctx.alpha, ctx.beta, ctx.in_shape = args, alpha, beta, x.shape
        return F.conv2d(x, weight, bias, *args)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        weight, zp, zn, fallback, is_pos, is_neg = ctx.saved_tensors
        shape, lead = ctx.in_shape[-3:], grad.shape[:-3]

        def back(g, w):
            g4 = g.reshape(-1, *g.shape[-3:])
            return torch.nn.grad.conv2d_input((g4.shape[0], *shape), w, g4, *ctx.conv_args).reshape(*lead, *shape)

        relevance, keep, zero = grad * (zp + zn), ~fallback, torch.zeros_like(zp)
        sp = torch.where(keep, ctx.alpha * relevance / torch.where(keep, zp, 1.0), zero)
        sn = torch.where(keep, ctx.beta * relevance / torch.where(keep, zn, 1.0), zero)
        wp, wn = weight.clamp(min=0), weight.clamp(max=0)
        m = torch.where(is_pos, back(sp, wp) - back(sn, wn), torch.where(is_neg, back(sp, wn) - back(sn, wp), 0.0))
        m = m + back(torch.where(fallback, grad, torch.zeros_like(grad)), weight)
        return m, None, None, None, None, None, None, None


class AlphaBeta(Rule):
    """LRP-αβ with α − β = 1 so that relevance is conserved (see the module docstring).  DetDSHAP applies it to the
    last convolutions before the detection outputs."""

    kinds = frozenset({"conv"})

    def __init__(self, alpha: float = 1.0, beta: float = 0.0):
        if abs(alpha - beta - 1) > 1e-12 or beta < 0:
            raise RuleError(f"AlphaBeta needs alpha - beta = 1 and beta >= 0 to conserve relevance; got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def bind(self, node: fx.Node) -> Bound | None:
        b = super().bind(node)
        if node.target is not aten.conv2d.default or isinstance(conv_args(node.args)[1][1], str):
            raise RuleError(f"AlphaBeta supports aten.conv2d with numeric padding only; node {node.name} is {node.target}")
        return b

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0],)

    def explain(self, b, args, kwargs, saved, eps):
        (x0,) = saved
        (x, w, bias), args_ = conv_args(args)
        return AlphaBetaConvFn.apply(x, x0, w, bias, args_, self.alpha, self.beta, eps)

    def __repr__(self) -> str:
        return f"AlphaBeta(alpha={self.alpha}, beta={self.beta})"

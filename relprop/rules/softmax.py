"""Softmax, exact and bounded, by decomposition  y = exp(z),  z = x − L,  L = logsumexp(x):

    exp (rescale):         m_z = m_y · Δy/Δz
    z = x − L (linear):    m_x = m_z,   m_L = −Σ m_z
    logsumexp (convex):    ΔL = t·(y·Δx) + (1 − t)·(y0·Δx), t ∈ [0, 1]  (ΔL lies between the two tangents),
                           so m_x += m_L · (t·y + (1 − t)·y0)

Every factor is bounded (probabilities, exp slopes ≤ 1) and the rule is invariant to shifting the logits.
"""

from __future__ import annotations

import math

import torch

from .base import Rule
from .rescale import secant

aten = torch.ops.aten


def exp_normal(z: torch.Tensor) -> torch.Tensor:
    """exp(z), in float32/float64 with z clamped one above log(smallest normal): equal to exp(z) within 3.2e-38
    (float32) or 6e-308 (float64), on every device alike.  CPU's vectorised exp leaves its fast path below that
    (75 ms against 0.6 ms for 537,600 values at -88 on one thread), and a random yolov8n's DFL logits give z down
    to -1670: the softmax then cost as much as a fifth of explaining a box.  Other dtypes: plain exp (a clamp
    there would change values, e.g. 1.7e-4 in float16)."""
    if z.dtype in _EXP_LOW:
        z = z.clamp(min=_EXP_LOW[z.dtype])
    return torch.exp(z)


_EXP_LOW = {dtype: math.log(torch.finfo(dtype).tiny) + 1.0 for dtype in (torch.float32, torch.float64)}


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp along `dim` (keepdim) with `exp_normal`, so no term takes the subnormal slow path."""
    top = x.amax(dim, keepdim=True)
    return top + torch.log(exp_normal(x - top).sum(dim, keepdim=True))


class SoftmaxFn(torch.autograd.Function):
    """y = softmax(x, dim);  backward  m_x = m_z − Σ m_z · (t·y + (1 − t)·y0),  m_z = m_y·Δy/Δz  (module docstring)."""

    @staticmethod
    def forward(ctx, x, x0, dim, eps):  # noqa: D102
        x0 = x0.expand_as(x)
        big, big0 = logsumexp(x, dim), logsumexp(x0, dim)
        z, z0 = x - big, x0 - big0
        y, y0 = exp_normal(z), exp_normal(z0)
        slope = secant(y - y0, z - z0, exp_normal, z, z0, eps)
        dx = x - x0
        a, a0 = (y * dx).sum(dim, keepdim=True), (y0 * dx).sum(dim, keepdim=True)
        gap = a - a0
        tie = gap == 0
        t = torch.where(tie, torch.full_like(gap, 0.5), (big - big0 - a0) / torch.where(tie, torch.ones_like(gap), gap))
        t = t.clamp(0.0, 1.0)
        ctx.save_for_backward(slope, t * y + (1 - t) * y0)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        slope, weights = ctx.saved_tensors
        m_z = grad * slope
        return m_z - m_z.sum(ctx.dim, keepdim=True) * weights, None, None, None


class Softmax(Rule):
    """Exact, bounded softmax rule (see the module docstring)."""

    kinds = frozenset({"softmax"})

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0],)

    def explain(self, b, args, kwargs, saved, eps):
        (x0,) = saved
        x = args[0]
        if b.target is aten._softmax.default and args[2] and x.dtype != torch.float32:  # half_to_float
            x, x0 = x.float(), x0.float()
        return SoftmaxFn.apply(x, x0, int(args[1]), eps)

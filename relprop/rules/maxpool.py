"""Max-pool, symmetric in tied positions.  For each window, A = the positions where the input reaches its max y,
B = those where the reference reaches its max y0 (n_A, n_B of them; usually one each):

    Δy = t·mean_A(Δx) + (1 − t)·mean_B(Δx),   t = (Δy − mean_B Δx)/(mean_A Δx − mean_B Δx) ∈ [0, 1]

(mean_A Δx = y − mean_A x0 ≥ Δy ≥ mean_B x − y0 = mean_B Δx), so each position of A gets m_y·t/n_A and each of B
m_y·(1 − t)/n_B: tied players get equal shares (Shapley's symmetry), independent of which argmax a device returns.
Overlapping windows (SPPF's k5 s1) accumulate into the same input positions by scatter-add.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import functional as F

from ..errors import RuleError
from .base import Rule

aten = torch.ops.aten


def windows(x: torch.Tensor, out_hw: Sequence[int], pool_args: tuple, fill: float) -> torch.Tensor:
    """The max-pool windows of x (B, C, H, W) as (B, C, K, L): K positions per window, L = out_h·out_w windows.

    Padding (and ceil_mode's overhang) is filled with `fill`; `pool_args` are aten.max_pool2d's after the input.
    """
    def pair(v: Any) -> tuple[int, int]:
        v = [int(v)] if isinstance(v, (int, float)) else [int(i) for i in v]
        return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])

    kernel, stride, padding, dilation = (list(pool_args) + [[], [0, 0], [1, 1]][len(pool_args) - 1:])[:4]
    (kh, kw), (ph, pw), (dh, dw) = pair(kernel), pair(padding), pair(dilation)
    sh, sw = pair(stride) if (isinstance(stride, (int, float)) or len(stride)) else (kh, kw)
    oh, ow = out_hw
    h, w = x.shape[-2:]
    extra_h = max(0, (oh - 1) * sh + dh * (kh - 1) + 1 - (h + 2 * ph))
    extra_w = max(0, (ow - 1) * sw + dw * (kw - 1) + 1 - (w + 2 * pw))
    xp = F.pad(x, (pw, pw + extra_w, ph, ph + extra_h), value=fill)
    cols = F.unfold(xp, (kh, kw), dilation=(dh, dw), stride=(sh, sw))  # (B, C·K, L)
    return cols.view(x.shape[0], x.shape[1], kh * kw, oh * ow)


def shares(xw, x0w, y, y0, eps: float) -> torch.Tensor:
    """Each window position's share of m_y, (B, C, K, L): t/n_A on A, (1 − t)/n_B on B (the module formula)."""
    in_a, in_b = xw == y, x0w == y0
    n_a, n_b = in_a.sum(2, keepdim=True).to(xw.dtype), in_b.sum(2, keepdim=True).to(xw.dtype)
    zero = torch.zeros((), dtype=xw.dtype, device=xw.device)
    dxa = y - torch.where(in_a, x0w, zero).sum(2, keepdim=True) / n_a   # mean_A Δx
    dxb = torch.where(in_b, xw, zero).sum(2, keepdim=True) / n_b - y0   # mean_B Δx
    gap = dxa - dxb
    tie = gap.abs() <= eps
    t = torch.where(tie, torch.full_like(gap, 0.5), (y - y0 - dxb) / torch.where(tie, torch.ones_like(gap), gap))
    t = t.clamp(0.0, 1.0)
    return in_a * (t / n_a) + in_b * ((1 - t) / n_b)


class MaxPoolFn(torch.autograd.Function):
    """y = max-pool(x);  backward  m_x[i] = Σ_windows m_y · share(i)  (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, x0, y0, pool_args, eps):  # noqa: D102
        y, idx = aten.max_pool2d_with_indices.default(x, *pool_args)
        h, w = x.shape[-2:]
        out_hw = y.shape[-2:]
        win = [windows(t, out_hw, pool_args, float("-inf")) for t in (x, x0)]
        weights = shares(*win, y.flatten(2).unsqueeze(2), y0.flatten(2).unsqueeze(2), eps)
        # where each window position lies in the flattened input; padding goes to a dropped slot h·w
        pos = torch.arange(h * w, dtype=x.dtype, device=x.device).view(1, 1, h, w)
        ctx.save_for_backward(weights, windows(pos, out_hw, pool_args, float(h * w)).round().long())
        ctx.in_shape = x.shape
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, grad, _grad_idx):  # noqa: D102
        weights, where_ = ctx.saved_tensors
        b, c, h, w = ctx.in_shape
        share = (weights * grad.reshape(b, c, 1, -1)).reshape(b, c, -1)
        out = torch.zeros(b, c, h * w + 1, dtype=grad.dtype, device=grad.device)
        out = torch.scatter_add(out, 2, where_.expand(b, c, -1, -1).reshape(b, c, -1), share)
        return out[..., :h * w].reshape(ctx.in_shape), None, None, None, None


class MaxPool(Rule):
    """Max-pool rule (see the module docstring): each window's Δy goes to the input's and the reference's maxima,
    split equally among tied positions."""

    kinds = frozenset({"maxpool"})

    def record(self, b, args, kwargs):
        if kwargs:
            raise RuleError(f"max-pool node {b.name}: keyword arguments {sorted(kwargs)} are not supported")
        y, idx = aten.max_pool2d_with_indices.default(*args)
        out = (y, idx) if b.target is aten.max_pool2d_with_indices.default else y
        return out, (args[0], idx, y)

    def explain(self, b, args, kwargs, saved, eps):
        x0, _idx0, y0 = saved
        y, idx = MaxPoolFn.apply(args[0], x0, y0, tuple(args[1:]), 0.0)  # any gap ≠ 0 is safe
        return (y, idx) if b.target is aten.max_pool2d_with_indices.default else y

"""The autograd Functions behind the rules: forward is the op, backward propagates DeepLIFT multipliers.

Notation.  Every Function sees the input's activation ``x`` and the reference's activation ``x0`` at the same node
(``x0`` may have batch 1 and broadcasts over ``x``), writes ``Δx = x − x0`` and ``Δy = y − y0``, and receives the
multiplier ``m_y = ∂target/∂y`` of the layer above.  It returns ``m_x`` such that the *conservation law*

    Σ m_x · Δx  =  Σ m_y · Δy

holds exactly (up to rounding) for each pair of input and reference.  Chained through ordinary autograd with the plain
gradient on linear ops (for which the law holds trivially), the input multiplier times the input's Δ is the DeepLIFT /
DeepSHAP attribution, and it sums to ``f(x) − f(x0)``.

Every backward is written with out-of-place tensor ops only, so it also runs under ``vmap``: that is how several
targets (boxes) share one forward and one batched backward (``torch.autograd.grad(..., is_grads_batched=True)``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F

aten = torch.ops.aten


def _sum_to(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Reduce a broadcast gradient back to `shape` (like autograd does for broadcasting ops)."""
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    lead = t.dim() - len(shape)
    if lead:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


def secant(dy: torch.Tensor, dx: torch.Tensor, tangent: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
           x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Δy/Δx elementwise, and the derivative where |Δx| ≤ eps·(1 + |x|): `tangent` itself if it is a tensor (the
    derivative at x0, see `RescaleFn`), else `tangent` evaluated at the midpoint (x + x0)/2.

    The threshold is relative so that a secant never divides a rounding error of y by a tiny Δx.  Both are computed
    everywhere and selected with `where`: no host synchronisation (rules must run at full speed on CUDA and be
    capturable).  `dy` is overwritten.
    """
    slope = dy.div_(dx)  # dy is a temporary of the caller: reuse its memory
    small = dx.abs() <= x.abs().mul_(eps).add_(eps)
    return torch.where(small, tangent if isinstance(tangent, torch.Tensor) else tangent((x + x0) / 2), slope)


class RescaleFn(torch.autograd.Function):
    """Rescale rule of DeepLIFT for y = f(x) elementwise:  m_x = m_y · Δy/Δx, and the derivative where |Δx| ≤ eps.

    `tangent` is either the derivative function, taken at (x + x0)/2, or, for a smooth f, the tensor f'(x0) that the
    reference pass computed once: where |Δx| ≤ eps·(1 + |x|) (eps ≈ sqrt(machine epsilon)), f'(x0)·Δx differs from
    Δy by at most max|f''|·Δx²/2, below the rounding of y, and the per-call sigmoid at the midpoint is saved (it was
    about 40% of the rule's elementwise passes on every SiLU of YOLO).
    """

    @staticmethod
    def forward(ctx, x, x0, y0, op, tangent, eps):  # noqa: D102 - the op itself
        y = op(x)
        dx = x - x0
        slope = secant(y - y0, dx, tangent, x, x0, eps)
        ctx.save_for_backward(slope)
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (slope,) = ctx.saved_tensors
        return grad * slope, None, None, None, None, None


def _windows(x: torch.Tensor, out_hw: Sequence[int], pool_args: tuple, fill: float) -> torch.Tensor:
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


class MaxPoolFn(torch.autograd.Function):
    """Max-pool rule, symmetric in tied positions.  For each window, A = the positions where the input reaches its
    max y, B = those where the reference reaches its max y0 (n_A, n_B of them; usually one each):

        Δy = y − y0 = t·mean_A(Δx) + (1 − t)·mean_B(Δx),   t = (Δy − mean_B Δx)/(mean_A Δx − mean_B Δx) ∈ [0, 1]

    (mean_A Δx = y − mean_A x0 ≥ Δy ≥ mean_B x − y0 = mean_B Δx), so each position of A gets m_y·t/n_A and each of
    B m_y·(1 − t)/n_B: tied players get equal shares (Shapley's symmetry), and the result does not depend on which
    argmax an implementation returns (CPU and CUDA differ on a constant reference).  Overlapping windows (SPPF's
    k5 s1) accumulate into the same input positions by scatter-add.  The law holds window by window.
    """

    @staticmethod
    def forward(ctx, x, x0, idx0, y0, pool_args, eps):  # noqa: D102
        y, idx = aten.max_pool2d_with_indices.default(x, *pool_args)
        b, c, h, w = x.shape
        out_hw = y.shape[-2:]
        xw = _windows(x, out_hw, pool_args, float("-inf"))
        x0w = _windows(x0, out_hw, pool_args, float("-inf"))
        yf, y0f = y.flatten(2).unsqueeze(2), y0.flatten(2).unsqueeze(2)
        in_a, in_b = xw == yf, x0w == y0f
        n_a, n_b = in_a.sum(2, keepdim=True).to(x.dtype), in_b.sum(2, keepdim=True).to(x.dtype)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        dxa = yf - torch.where(in_a, x0w, zero).sum(2, keepdim=True) / n_a   # mean_A Δx
        dxb = torch.where(in_b, xw, zero).sum(2, keepdim=True) / n_b - y0f   # mean_B Δx
        gap = dxa - dxb
        tie = gap.abs() <= eps
        t = torch.where(tie, torch.full_like(gap, 0.5), (yf - y0f - dxb) / torch.where(tie, torch.ones_like(gap), gap))
        t = t.clamp(0.0, 1.0)
        weights = in_a * (t / n_a) + in_b * ((1 - t) / n_b)  # (B, C, K, L): the share of each window position
        # where each window position lies in the flattened input; padding goes to a dropped slot h·w
        pos = torch.arange(h * w, dtype=x.dtype, device=x.device).view(1, 1, h, w)
        where_ = _windows(pos, out_hw, pool_args, float(h * w)).round().long()
        ctx.save_for_backward(weights, where_)
        ctx.in_shape = x.shape
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, grad, _grad_idx):  # noqa: D102
        weights, where_ = ctx.saved_tensors
        b, c, h, w = ctx.in_shape
        share = weights * grad.reshape(b, c, 1, -1)  # (B, C, K, L)
        index = where_.expand(b, c, -1, -1).reshape(b, c, -1)
        out = torch.zeros(b, c, h * w + 1, dtype=grad.dtype, device=grad.device)
        out = torch.scatter_add(out, 2, index, share.reshape(b, c, -1))
        return out[..., :h * w].reshape(ctx.in_shape), None, None, None, None, None


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


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """logsumexp along `dim` (keepdim) with `exp_normal`, so no term takes the subnormal slow path."""
    top = x.amax(dim, keepdim=True)
    return top + torch.log(exp_normal(x - top).sum(dim, keepdim=True))


class SoftmaxFn(torch.autograd.Function):
    """Softmax rule, exact and bounded, by decomposition  y = exp(z),  z = x − L,  L = logsumexp(x):

        exp (rescale):         m_z = m_y · Δy/Δz
        z = x − L (linear):    m_x = m_z,   m_L = −Σ m_z
        logsumexp (convex):    ΔL = t·(y·Δx) + (1 − t)·(y0·Δx), t ∈ [0, 1]  (ΔL lies between the two tangents),
                               so m_x += m_L · (t·y + (1 − t)·y0)

    Every factor is bounded (probabilities, exp slopes ≤ 1) and the rule is invariant to shifting the logits.
    """

    @staticmethod
    def forward(ctx, x, x0, dim, eps):  # noqa: D102
        x0 = x0.expand_as(x)
        big, big0 = _logsumexp(x, dim), _logsumexp(x0, dim)
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


class ProductFn(torch.autograd.Function):
    """Product of two data tensors y = u·v, Shapley split:  Δy = (v + v0)/2·Δu + (u + u0)/2·Δv  exactly."""

    @staticmethod
    def forward(ctx, u, v, u0, v0):  # noqa: D102
        ctx.save_for_backward(u + u0, v + v0)
        ctx.shapes = (u.shape, v.shape)
        return u * v

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        usum, vsum = ctx.saved_tensors
        su, sv = ctx.shapes
        return _sum_to(grad * vsum / 2, su), _sum_to(grad * usum / 2, sv), None, None


class QuotientFn(torch.autograd.Function):
    """Quotient of two data tensors y = u/v = u·w with w = 1/v:  Shapley product on (u, w), and the exact secant of
    the reciprocal  Δw/Δv = −w·w0.
    """

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
        m_u = grad * wsum / 2
        m_v = grad * usum / 2 * dwdv
        return _sum_to(m_u, su), _sum_to(m_v, sv), None, None


class AlphaBetaConvFn(torch.autograd.Function):
    """LRP-αβ on differences for a convolution (DetDSHAP's rule for the last convolutions before the head), α − β = 1.

    With the contributions z_ij = w_ij·Δx_i split into positive and negative parts, z⁺_j = Σ_i z⁺_ij, z⁻_j = Σ_i z⁻_ij
    (so Δy_j = z⁺_j + z⁻_j, the bias cancels):

        R_i = Σ_j ( α·z⁺_ij/z⁺_j − β·z⁻_ij/z⁻_j ) · m_yj·Δy_j,      m_x = R/Δx

    Where z⁺_j or z⁻_j vanishes the plain gradient is used for output j, so the law holds exactly everywhere.
    """

    @staticmethod
    def forward(ctx, x, x0, weight, bias, conv_args, alpha, beta, eps):  # noqa: D102
        stride, padding, dilation, groups = conv_args
        y = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
        dx = x - x0
        pos, neg = dx.clamp(min=0), dx.clamp(max=0)
        wp, wn = weight.clamp(min=0), weight.clamp(max=0)

        def conv(a, w):
            return F.conv2d(a, w, None, stride, padding, dilation, groups)

        zp = conv(pos, wp) + conv(neg, wn)
        zn = conv(pos, wn) + conv(neg, wp)
        fallback = (zp <= eps) | (zn >= -eps)
        ctx.save_for_backward(weight, zp, zn, fallback, dx > 0, dx < 0)
        ctx.conv_args, ctx.alpha, ctx.beta, ctx.in_shape = conv_args, alpha, beta, x.shape
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        weight, zp, zn, fallback, is_pos, is_neg = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        shape = ctx.in_shape[-3:]
        lead = grad.shape[:-3]

        def back(g, w):
            g4 = g.reshape(-1, *g.shape[-3:])
            out = torch.nn.grad.conv2d_input((g4.shape[0], *shape), w, g4, stride, padding, dilation, groups)
            return out.reshape(*lead, *shape)

        relevance = grad * (zp + zn)
        keep = ~fallback
        one = torch.ones_like(zp)
        sp = torch.where(keep, ctx.alpha * relevance / torch.where(keep, zp, one), torch.zeros_like(zp))
        sn = torch.where(keep, ctx.beta * relevance / torch.where(keep, zn, one), torch.zeros_like(zn))
        wp, wn = weight.clamp(min=0), weight.clamp(max=0)
        m_pos = back(sp, wp) - back(sn, wn)
        m_neg = back(sp, wn) - back(sn, wp)
        m = torch.where(is_pos, m_pos, torch.where(is_neg, m_neg, torch.zeros_like(m_pos)))
        m = m + back(torch.where(fallback, grad, torch.zeros_like(grad)), weight)
        return m, None, None, None, None, None, None, None


class TapFn(torch.autograd.Function):
    """Identity on a tensor y that also sends its relevance per channel, Σ m_y·Δy over every dim but batch and
    `channel_dim`, into the gradient of `sink` (a zero (B, C) leaf): how per-filter relevance is read off the one
    backward pass without hooks.
    """

    @staticmethod
    def forward(ctx, y, y0, sink, channel_dim):  # noqa: D102
        ctx.save_for_backward(y - y0)
        ctx.channel_dim = channel_dim
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (dy,) = ctx.saved_tensors
        rel = grad * dy
        if rel.dim() > 2:
            cd = ctx.channel_dim % rel.dim()
            rel = rel.sum(dim=tuple(d for d in range(1, rel.dim()) if d != cd))
        channel = rel
        return grad, None, channel, None


class MatMulFn(torch.autograd.Function):
    """Matrix product of two data tensors y = A·B (batched, broadcast), bilinear Shapley split:
    Δy = ½·ΔA·(B + B0) + ½·(A + A0)·ΔB  exactly (the product rule in matrix form)."""

    @staticmethod
    def forward(ctx, a, b, a0, b0):  # noqa: D102
        ctx.save_for_backward(a + a0, b + b0)
        ctx.shapes = (a.shape, b.shape)
        return torch.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        asum, bsum = ctx.saved_tensors
        sa, sb = ctx.shapes
        # Both maps are linear, so their vector-Jacobian products are those of matmul at any point.
        _, vjp_a = torch.func.vjp(lambda a: torch.matmul(a, bsum), torch.zeros(sa, dtype=grad.dtype, device=grad.device))
        _, vjp_b = torch.func.vjp(lambda b: torch.matmul(asum, b), torch.zeros(sb, dtype=grad.dtype, device=grad.device))
        return vjp_a(grad / 2)[0], vjp_b(grad / 2)[0], None, None

"""Each relevance rule against its closed form on a one-op graph, and the rule registry (overrides, errors)."""

from __future__ import annotations

import math

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import fxgraph  # noqa: E402
import relprop  # noqa: E402
from relprop.rules.base import sum_to  # noqa: E402

D = torch.float64


class Op(nn.Module):
    """A one-op network."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def graph_of(f, shape) -> relprop.RelevanceGraph:
    gm = fxgraph.trace_module(Op(f).to(D), torch.randn(2, *shape, dtype=D))
    return relprop.RelevanceGraph(gm)


@pytest.fixture(scope="module")
def silu_graph():
    return graph_of(F.silu, (6,))


def weighted(w):
    return lambda y: (y * w).flatten(1).sum(1)



class BNThenTranspose(nn.Module):
    """BatchNorm whose output is read through `flatten(2).transpose(1, 2)` (YOLO12's AAttn): the gradient reaching the
    BN is channels-last strided."""

    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.running_var.uniform_(0.5, 1.5)
            self.bn.running_mean.normal_()

    def forward(self, x):
        return self.bn(x).flatten(2).transpose(1, 2)


def test_batchnorm_rule_is_exact_for_a_channels_last_gradient():
    """m_x = m_y·γ/√(σ²+ε): the plain autograd of torch 2.14.1 on CPU gets this wrong at batch 1 (the BatchNorm rule
    makes the incoming gradient contiguous)."""
    net = BNThenTranspose(16).to(D).eval()
    gm = fxgraph.trace_module(net, torch.randn(2, 16, 4, 4, dtype=D))
    engine = relprop.RelevanceGraph(gm)
    gen = torch.Generator().manual_seed(0)
    x, x0 = (torch.randn(1, 16, 4, 4, dtype=D, generator=gen) for _ in range(2))
    w = torch.randn(1, 16, 16, dtype=D, generator=gen)  # (batch, position, channel), contiguous like a matmul's grad
    rel = engine.relevance(x, engine.reference(x0), lambda o: (o[0] * w).flatten(1).sum(1))
    scale = (net.bn.weight / torch.sqrt(net.bn.running_var + net.bn.eps)).view(1, 16, 1, 1)
    want = w.transpose(1, 2).reshape(1, 16, 4, 4) * scale * (x - x0)
    torch.testing.assert_close(rel.attribution, want, rtol=1e-12, atol=1e-12)
    assert abs(float(rel.delta)) < 1e-12


# -- rescale ----------------------------------------------------------------------------------------------------------

def test_silu_rescale_is_closed_form(silu_graph):
    x = torch.tensor([[-3.0, -0.5, 0.0, 0.7, 2.0, 5.0]], dtype=D)
    x0 = torch.tensor([[1.0, -0.5, 1e-12, -0.2, 2.0 + 1e-11, 0.0]], dtype=D)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5, -1.0], dtype=D)
    attr, delta = relprop.attribute(silu_graph, x, x0, weighted(w))
    # rescale: each element's relevance is exactly w·(silu(x) − silu(x0)), also where Δx = 0 or |Δx| < eps
    expected = w * (F.silu(x) - F.silu(x0))
    torch.testing.assert_close(attr, expected, rtol=0, atol=1e-15)
    assert abs(float(delta)) < 1e-14


def test_rescale_uses_the_derivative_below_eps(silu_graph):
    x = torch.tensor([[0.3] * 6], dtype=D)
    dx = torch.tensor([[0.0, 1e-12, -1e-12, 5e-10, 2e-9, -2e-9]], dtype=D)
    x0 = x - dx
    result = silu_graph.relevance(x, silu_graph.reference(x0), lambda y: y[0].sum(1))
    dx = x - x0  # the difference as represented
    mult = result.attribution[0, 1:] / dx[0, 1:]
    d = torch.sigmoid(torch.tensor(0.3, dtype=D))
    silu_prime = d * (1 + 0.3 * (1 - d))
    # below eps (1e-9 in float64) the multiplier is the derivative, not a rounding-noise secant
    torch.testing.assert_close(mult[:3], silu_prime.expand(3), rtol=1e-9, atol=0)
    torch.testing.assert_close(mult[3:], silu_prime.expand(2), rtol=1e-6, atol=0)  # secant, still close
    assert result.attribution[0, 0] == 0 and torch.isfinite(result.attribution).all()


def silu_prime(z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


@pytest.mark.parametrize("f, tangent_at", [(F.silu, "x0"), (torch.relu, "midpoint")])
def test_rescale_tangent_point_below_eps(monkeypatch, f, tangent_at):
    """Where |Δx| ≤ eps·(1 + |x0|) a smooth f takes f'(x0) (from the reference pass), ReLU f' at the midpoint.
    With a real eps the two points cannot be told apart (they differ by f''·Δx/2), so eps is widened to 0.5 here:
    x = 0.3 against x0 = -0.1 is then "small", and f'(x0), f'(midpoint) and the secant all differ.  The third
    element is small by eps·(1 + |x|) (2.45) but not by the reference's bound eps·(1 + |x0|) (1.5): a secant."""
    from relprop.rules import base

    monkeypatch.setitem(base._EPS, D, 0.5)
    g = graph_of(f, (3,))
    x = torch.tensor([[0.3, 0.3, 3.9]], dtype=D)
    x0 = torch.tensor([[-0.1, 0.5, 2.0]], dtype=D)  # |Δx| 0.4 ≤ 0.55, 0.2 ≤ 0.75; 1.9 > 1.5: a secant
    result = g.relevance(x, g.reference(x0), lambda y: y[0].sum(1))
    mult = result.attribution[0] / (x - x0)[0]
    fprime = silu_prime if f is F.silu else (lambda z: (z > 0).to(z.dtype))
    at = x0 if tangent_at == "x0" else (x + x0) / 2
    other = (x + x0) / 2 if tangent_at == "x0" else x0
    assert not torch.allclose(fprime(at[0, :2]), fprime(other[0, :2]))  # the check below can tell them apart
    torch.testing.assert_close(mult[:2], fprime(at[0, :2]), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(mult[2], ((f(x) - f(x0)) / (x - x0))[0, 2], rtol=1e-12, atol=0)  # the secant above eps


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=6, max_size=6), st.lists(st.floats(-1e-6, 1e-6), min_size=6, max_size=6))
def test_rescale_conserves_near_zero_difference(silu_graph, xs, dxs):
    x = torch.tensor([xs], dtype=D)
    x0 = x - torch.tensor([dxs], dtype=D)
    attr, delta = relprop.attribute(silu_graph, x, x0, lambda y: y.sum(1))
    assert abs(float(delta)) <= 1e-13  # rounding of six silu values of up to 8; no blow-up near Δx = 0


def test_sigmoid_and_relu_rescale():
    x = torch.randn(3, 5, dtype=D)
    x0 = torch.randn(3, 5, dtype=D)
    for f in (torch.sigmoid, torch.relu):
        attr, delta = relprop.attribute(graph_of(f, (5,)), x, x0, lambda y: y.sum(1))
        torch.testing.assert_close(attr, f(x) - f(x0), rtol=0, atol=1e-15)


# -- max-pool ---------------------------------------------------------------------------------------------------------

def test_maxpool_hand_computed_overlapping_windows():
    # x = [3, 1, 2], x0 = [0, 2, 1], windows {0,1} and {1,2} (kernel (1,2), stride 1).
    # window {0,1}: argmax a=0, reference argmax b=1, Δy = 3 − 2 = 1, Δx_a = 3, Δx_b = −1, t = (1+1)/(3+1) = ½
    # window {1,2}: a=2, b=1, Δy = 2 − 2 = 0, Δx_a = 1, Δx_b = −1, t = (0+1)/(1+1) = ½
    # multipliers for target Σy: [½, ½ + ½, ½] → relevance m·Δx = [1.5, −1, 0.5], total 1 = Δy₁ + Δy₂
    g = graph_of(lambda x: F.max_pool2d(x, (1, 2), 1), (1, 1, 3))
    x = torch.tensor([[[[3.0, 1.0, 2.0]]]], dtype=D)
    x0 = torch.tensor([[[[0.0, 2.0, 1.0]]]], dtype=D)
    attr, delta = relprop.attribute(g, x, x0, lambda y: y.flatten(1).sum(1))
    torch.testing.assert_close(attr.flatten(), torch.tensor([1.5, -1.0, 0.5], dtype=D), rtol=0, atol=1e-15)
    assert abs(float(delta)) < 1e-15


def maxpool_reference(x, x0, m_y, k, s, p):
    """The max-pool rule by explicit loops over windows (numpy), written independently of relprop."""
    c, h, w = x.shape
    xp = np.full((c, h + 2 * p, w + 2 * p), -np.inf)
    x0p = np.full_like(xp, -np.inf)
    xp[:, p:p + h, p:p + w], x0p[:, p:p + h, p:p + w] = x, x0
    m = np.zeros_like(xp)
    oh, ow = m_y.shape[1:]
    for ch in range(c):
        for i in range(oh):
            for j in range(ow):
                win, win0 = xp[ch, i * s:i * s + k, j * s:j * s + k], x0p[ch, i * s:i * s + k, j * s:j * s + k]
                a = np.unravel_index(np.argmax(win), win.shape)
                b = np.unravel_index(np.argmax(win0), win0.shape)
                dxa, dxb = win[a] - win0[a], win[b] - win0[b]
                dy = win[a] - win0[b]
                t = 0.5 if dxa == dxb else (dy - dxb) / (dxa - dxb)
                m[ch, i * s + a[0], j * s + a[1]] += m_y[ch, i, j] * t
                m[ch, i * s + b[0], j * s + b[1]] += m_y[ch, i, j] * (1 - t)
    return m[:, p:p + h, p:p + w]


@pytest.mark.parametrize("k,s,p", [(5, 1, 2), (3, 1, 1), (2, 2, 0)])
def test_maxpool_matches_loop_reference(k, s, p):
    torch.manual_seed(k)
    g = graph_of(lambda x: F.max_pool2d(x, k, s, p), (2, 6, 6))
    x, x0 = torch.randn(1, 2, 6, 6, dtype=D), torch.randn(1, 2, 6, 6, dtype=D)
    m_y = torch.randn(1, *F.max_pool2d(x, k, s, p).shape[1:], dtype=D)
    attr, delta = relprop.attribute(g, x, x0, lambda y: (y * m_y).flatten(1).sum(1))
    m = maxpool_reference(x[0].numpy(), x0[0].numpy(), m_y[0].numpy(), k, s, p)
    np.testing.assert_allclose(attr[0].numpy(), m * (x - x0)[0].numpy(), rtol=1e-10, atol=1e-12)
    assert abs(float(delta)) < 1e-12


def test_sppf_chain_of_three_pools_conserves():
    g = graph_of(lambda x: torch.cat([x, F.max_pool2d(x, 5, 1, 2), F.max_pool2d(F.max_pool2d(x, 5, 1, 2), 5, 1, 2)], 1),
                 (3, 7, 7))
    x, x0 = torch.randn(4, 3, 7, 7, dtype=D), torch.randn(4, 3, 7, 7, dtype=D)
    x0[1] = x[1]  # a reference equal to the input: everything is zero
    _, delta = relprop.attribute(g, x, x0, lambda y: (y ** 1).flatten(1).sum(1))
    assert delta.abs().max() < 1e-12


# -- softmax, product, quotient ---------------------------------------------------------------------------------------

def softmax_reference(x, x0, g):
    """The softmax rule's closed form (exp rescale on z = x − logsumexp(x), logsumexp split between its tangents)."""
    big, big0 = np.log(np.exp(x).sum()), np.log(np.exp(x0).sum())
    y, y0 = np.exp(x - big), np.exp(x0 - big0)
    m_z = g * (y - y0) / ((x - big) - (x0 - big0))
    a, a0 = (y * (x - x0)).sum(), (y0 * (x - x0)).sum()
    t = (big - big0 - a0) / (a - a0)
    assert 0 <= t <= 1  # convexity of logsumexp
    m_x = m_z - m_z.sum() * (t * y + (1 - t) * y0)
    return m_x * (x - x0)


def test_softmax_rule_closed_form_and_conservation():
    g = graph_of(lambda x: torch.softmax(x, 1), (5,))
    x, x0 = torch.randn(3, 5, dtype=D) * 3, torch.randn(3, 5, dtype=D)
    w = torch.randn(5, dtype=D)
    attr, delta = relprop.attribute(g, x, x0, weighted(w))
    for b in range(3):
        np.testing.assert_allclose(attr[b].numpy(), softmax_reference(x[b].numpy(), x0[b].numpy(), w.numpy()),
                                   rtol=1e-10, atol=1e-14)
    assert delta.abs().max() < 1e-14
    # a uniform shift changes no probability: the logits' relevance cancels out
    attr, delta = relprop.attribute(g, x, x - 2.5, weighted(w))
    assert attr.sum(1).abs().max() < 1e-14
    # far-apart logits (a saturated softmax) stay finite and conserve in float32
    g32 = graph_of(lambda x: torch.softmax(x, 1), (5,))
    g32.module.float()
    x, x0 = torch.tensor([[90.0, -80.0, 3.0, 0.0, 1.0]]), torch.tensor([[-70.0, 60.0, 0.0, 2.0, -90.0]])
    attr, delta = relprop.attribute(g32, x, x0, lambda y: y[:, 0] + 2 * y[:, 1])
    assert torch.isfinite(attr).all() and attr.abs().max() < 10 and abs(float(delta)) < 1e-5



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_exp_never_leaves_the_normal_range(dtype):
    """The rule's exp clamps its argument where exp would be subnormal (CPU's exp is ~100x slower there, and a
    random yolov8n's DFL softmax sees z down to -1670): values within e·tiny of exp, never subnormal, never 0;
    other dtypes untouched."""
    from relprop.rules.softmax import exp_normal

    z = torch.cat([torch.linspace(-2000.0, 0.0, 4001, dtype=dtype), torch.tensor([-87.5, -708.5], dtype=dtype)])
    tiny = torch.finfo(dtype).tiny
    out = exp_normal(z)
    assert (out >= tiny).all()
    assert (out - torch.exp(z)).abs().max() <= 1.0001 * math.e * tiny
    assert torch.equal(out[z > -80], torch.exp(z[z > -80]))
    half = torch.tensor([-20.0, -3.0, 0.0], dtype=torch.float16)
    assert torch.equal(exp_normal(half), torch.exp(half))
    # the softmax rule stays exact on such logits (float64 conservation)
    g = graph_of(lambda x: torch.softmax(x, 1), (6,))
    x = torch.tensor([[900.0, -1100.0, 3.0, 0.0, 1.0, -700.0]], dtype=D)
    x0 = torch.tensor([[-8.0, 16.0, 0.0, 2.0, -9.0, 1.0]], dtype=D)
    attr, delta = relprop.attribute(g, x, x0, lambda y: y[:, 0] + 2 * y[:, 1] - y[:, 4])
    assert torch.isfinite(attr).all() and abs(float(delta)) < 1e-12

def test_product_is_shapley_split():
    def prod(x):
        a, b = x.chunk(2, 1)
        return a * b

    g = graph_of(prod, (6,))
    x, x0 = torch.randn(2, 6, dtype=D), torch.randn(2, 6, dtype=D)
    attr, delta = relprop.attribute(g, x, x0, lambda y: y.sum(1))
    u, v, u0, v0 = x[:, :3], x[:, 3:], x0[:, :3], x0[:, 3:]
    torch.testing.assert_close(attr[:, :3], (v + v0) / 2 * (u - u0), rtol=0, atol=1e-15)
    torch.testing.assert_close(attr[:, 3:], (u + u0) / 2 * (v - v0), rtol=0, atol=1e-15)
    assert delta.abs().max() < 1e-14


def test_quotient_rule_closed_form():
    # y = u / v = u·w, w = 1/v: Shapley split on (u, w) and the exact secant of the reciprocal, Δw/Δv = −1/(v·v0):
    #   R_u = m·(1/v + 1/v0)/2·Δu,   R_v = −m·(u + u0)/2 / (v·v0)·Δv,   R_u + R_v = m·(u/v − u0/v0)
    def quot(x):
        a, b = x.chunk(2, 1)
        return a / b

    torch.manual_seed(7)
    g = graph_of(quot, (6,))
    x, x0 = torch.randn(4, 6, dtype=D), torch.randn(4, 6, dtype=D)
    x[:, 3:], x0[:, 3:] = 0.5 + torch.rand(4, 3, dtype=D), -0.5 - torch.rand(4, 3, dtype=D)  # v and v0 of either sign
    m = torch.randn(3, dtype=D)
    attr, delta = relprop.attribute(g, x, x0, weighted(m))
    u, v, u0, v0 = x[:, :3], x[:, 3:], x0[:, :3], x0[:, 3:]
    torch.testing.assert_close(attr[:, :3], m * (1 / v + 1 / v0) / 2 * (u - u0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(attr[:, 3:], -m * (u + u0) / 2 / (v * v0) * (v - v0), rtol=1e-12, atol=1e-14)
    assert delta.abs().max() < 1e-12


def test_quotient_rule_closed_form_broadcast_denominator():
    # one denominator shared by three numerators (a softmax-style normalisation): R_v sums over the numerators
    def quot(x):
        a, b = x.split([3, 1], 1)
        return a / b

    torch.manual_seed(8)
    g = graph_of(quot, (4,))
    x, x0 = torch.randn(2, 4, dtype=D), torch.randn(2, 4, dtype=D)
    x[:, 3], x0[:, 3] = 1 + torch.rand(2, dtype=D), 2 + torch.rand(2, dtype=D)
    m = torch.randn(3, dtype=D)
    attr, delta = relprop.attribute(g, x, x0, weighted(m))
    u, v, u0, v0 = x[:, :3], x[:, 3:], x0[:, :3], x0[:, 3:]
    torch.testing.assert_close(attr[:, :3], m * (1 / v + 1 / v0) / 2 * (u - u0), rtol=1e-12, atol=1e-14)
    expected_v = (-m * (u + u0) / 2 / (v * v0) * (v - v0)).sum(1, keepdim=True)
    torch.testing.assert_close(attr[:, 3:], expected_v, rtol=1e-12, atol=1e-14)
    assert delta.abs().max() < 1e-12


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_quotient_conserves(seed):
    torch.manual_seed(seed)
    g = _quotient_graph()
    x, x0 = torch.randn(3, 4, dtype=D), torch.randn(3, 4, dtype=D)
    _, delta = relprop.attribute(g, x, x0, lambda y: y.sum(1))
    assert delta.abs().max() < 1e-12


_QUOTIENT = []


def _quotient_graph():
    if not _QUOTIENT:
        def quot(x):
            a, b = x.chunk(2, 1)
            return a / (torch.sigmoid(b) + 0.5)

        _QUOTIENT.append(graph_of(quot, (4,)))
    return _QUOTIENT[0]


# -- alpha-beta -------------------------------------------------------------------------------------------------------

class OneConv(nn.Module):
    def __init__(self, positive: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        if positive:
            with torch.no_grad():
                self.conv.weight.abs_()

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.0)])
def test_alpha_beta_conserves_and_reduces_to_gradient(alpha, beta):
    torch.manual_seed(1)
    x, x0 = torch.rand(2, 3, 5, 5, dtype=D) + 1, torch.rand(2, 3, 5, 5, dtype=D)  # Δx > 0 everywhere... mostly
    x0 = torch.minimum(x0, x - 0.1)
    rules = {"conv": relprop.AlphaBeta(alpha, beta)}
    pos = fxgraph.trace_module(OneConv(True).to(D), x)
    attr, delta = relprop.attribute(pos, x, x0, lambda y: y.flatten(1).sum(1), rules=rules)
    # all contributions w·Δx positive: αβ with α − β = 1 is the plain gradient
    plain, _ = relprop.attribute(pos, x, x0, lambda y: y.flatten(1).sum(1))
    torch.testing.assert_close(attr, plain, rtol=1e-10, atol=1e-12)
    mixed = fxgraph.trace_module(OneConv(False).to(D), x)
    x0 = torch.randn_like(x)
    attr, delta = relprop.attribute(mixed, x, x0, lambda y: y.flatten(1).sum(1), rules=rules)
    plain, _ = relprop.attribute(mixed, x, x0, lambda y: y.flatten(1).sum(1))
    assert delta.abs().max() < 1e-10
    assert (attr - plain).abs().max() > 1e-3  # a different rule, not the gradient in disguise


def alpha_beta_matrix(w, dx, m_y, alpha, beta):
    """LRP-αβ on differences for a linear map y = W·x + b, in matrix form (no fallback: every row has both signs):
    Z = W ⊙ Δxᵀ,  z⁺ = Σ_i Z⁺,  z⁻ = Σ_i Z⁻,  R_out = m_y·(z⁺ + z⁻),  R_in = (α·Z⁺/z⁺ − β·Z⁻/z⁻)ᵀ·R_out."""
    z = w * dx[None, :]
    zp, zn = z.clamp(min=0).sum(1), z.clamp(max=0).sum(1)
    assert (zp > 0).all() and (zn < 0).all()
    r_out = m_y * (zp + zn)
    return (alpha * z.clamp(min=0) / zp[:, None] - beta * z.clamp(max=0) / zn[:, None]).T @ r_out


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.0), (3.5, 2.5)])
def test_alpha_beta_closed_form_linear_layer(alpha, beta):
    torch.manual_seed(9)
    conv = nn.Conv2d(6, 4, 1).to(D)  # a linear layer 6 → 4 as a 1x1 convolution (AlphaBeta binds aten.conv2d)
    x, x0 = torch.randn(3, 6, 1, 1, dtype=D), torch.randn(3, 6, 1, 1, dtype=D)
    m_y = torch.randn(4, dtype=D)
    gm = fxgraph.trace_module(conv, x)
    attr, delta = relprop.attribute(gm, x, x0, lambda y: (y[:, :, 0, 0] * m_y).sum(1),
                                    rules={"conv": relprop.AlphaBeta(alpha, beta)})
    w = conv.weight[:, :, 0, 0].detach()
    for b in range(3):
        expected = alpha_beta_matrix(w, (x - x0)[b, :, 0, 0], m_y, alpha, beta)
        torch.testing.assert_close(attr[b, :, 0, 0], expected, rtol=1e-10, atol=1e-13)
    assert delta.abs().max() < 1e-12  # the bias cancels: Σ R = m_y·Δy


def alpha_beta_conv_reference(x, x0, w, m_y, alpha, beta, stride, padding, eps):
    """LRP-αβ on differences for a convolution by explicit loops over output positions (numpy), written from the
    formula: z_ij = w_ij·Δx_i over output j's receptive field, R_i = Σ_j (α·z⁺_ij/z⁺_j − β·z⁻_ij/z⁻_j)·m_j·Δy_j, and
    the plain gradient (R_i += w_ij·Δx_i·m_j) for an output where z⁺_j ≤ eps or z⁻_j ≥ −eps.  Returns R and the
    number of outputs that took the gradient."""
    cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    dx = np.zeros((cin, h + 2 * padding, wd + 2 * padding))
    dx[:, padding:padding + h, padding:padding + wd] = x - x0
    r = np.zeros_like(dx)
    fallback = 0
    for o in range(cout):
        for i in range(m_y.shape[1]):
            for j in range(m_y.shape[2]):
                window = (slice(None), slice(i * stride, i * stride + k), slice(j * stride, j * stride + k))
                z = w[o] * dx[window]
                zp, zn = z[z > 0].sum(), z[z < 0].sum()
                if zp <= eps or zn >= -eps:
                    r[window] += m_y[o, i, j] * z
                    fallback += 1
                else:
                    r[window] += (alpha * np.maximum(z, 0) / zp - beta * np.minimum(z, 0) / zn) * m_y[o, i, j] * (zp + zn)
    return r[:, padding:padding + h, padding:padding + wd], fallback


@pytest.mark.parametrize("alpha,beta,stride", [(1.0, 0.0, 1), (2.0, 1.0, 1), (2.0, 1.0, 2)])
def test_alpha_beta_closed_form_conv(alpha, beta, stride):
    torch.manual_seed(10 + stride)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=1).to(D)
    with torch.no_grad():
        conv.weight[0].abs_()  # filter 0 is positive: where Δx ≥ 0 too (the top-left corner) its z⁻ = 0
    x = torch.randn(1, 2, 6, 6, dtype=D)
    x0 = x - torch.randn(1, 2, 6, 6, dtype=D)
    x0[:, :, :3, :3] = x[:, :, :3, :3] - torch.rand(1, 2, 3, 3, dtype=D)
    m_y = torch.randn(1, *conv(x).shape[1:], dtype=D)
    gm = fxgraph.trace_module(conv, x)
    attr, delta = relprop.attribute(gm, x, x0, lambda y: (y * m_y).flatten(1).sum(1),
                                    rules={"conv": relprop.AlphaBeta(alpha, beta)})
    expected, fallback = alpha_beta_conv_reference(x[0].numpy(), x0[0].numpy(), conv.weight.detach().numpy(),
                                                   m_y[0].numpy(), alpha, beta, stride, 1,
                                                   relprop.engine.secant_eps(D))
    assert 0 < fallback < m_y.numel()  # both branches of the rule are exercised
    np.testing.assert_allclose(attr[0].numpy(), expected, rtol=1e-10, atol=1e-12)
    assert delta.abs().max() < 1e-12


def test_alpha_beta_needs_alpha_minus_beta_one():
    with pytest.raises(relprop.RuleError, match="alpha - beta = 1"):
        relprop.AlphaBeta(2.0, 0.5)


# -- registry ---------------------------------------------------------------------------------------------------------

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.flatten(1))


@pytest.fixture(scope="module")
def toy_gm():
    torch.manual_seed(3)
    return fxgraph.trace_module(Toy().to(D), torch.randn(2, 2, 4, 4, dtype=D))


def test_override_by_kind_and_by_node_name(toy_gm):
    default = relprop.RelevanceGraph(toy_gm)
    assert {type(b.rule).__name__ for b in default.bound.values()} == {"Rescale", "MaxPool"}
    relu_name = next(n.name for n in toy_gm.graph.nodes if fxgraph.info(n).kind == "relu")
    by_name = relprop.RelevanceGraph(toy_gm, {relu_name: relprop.Gradient()})
    by_kind = relprop.RelevanceGraph(toy_gm, {"relu": relprop.Gradient()})
    assert relu_name not in by_name.bound and relu_name not in by_kind.bound
    x, x0 = torch.randn(3, 2, 4, 4, dtype=D), torch.randn(3, 2, 4, 4, dtype=D)
    a1, d1 = relprop.attribute(by_name, x, x0, lambda y: y[:, 0])
    a2, _ = relprop.attribute(by_kind, x, x0, lambda y: y[:, 0])
    torch.testing.assert_close(a1, a2)
    _, d0 = relprop.attribute(default, x, x0, lambda y: y[:, 0])
    assert d0.abs().max() < 1e-12
    assert d1.abs().max() > 1e-6  # the gradient on a ReLU does not conserve: the override really took effect


def test_override_by_module_path_pattern(toy_gm):
    rg = relprop.RelevanceGraph(toy_gm, {"con*": relprop.AlphaBeta()})
    conv = next(n.name for n in toy_gm.graph.nodes if fxgraph.info(n).kind == "conv")
    assert isinstance(rg.bound[conv].rule, relprop.AlphaBeta)


def test_missing_rule_and_misapplied_rule_raise(toy_gm):
    kinds = relprop.deepshap_rules()
    del kinds["relu"]
    with pytest.raises(relprop.RuleError, match="no relevance rule for op kind 'relu'"):
        relprop.RelevanceGraph(toy_gm, relprop.Composite(kinds))
    conv = next(n.name for n in toy_gm.graph.nodes if fxgraph.info(n).kind == "conv")
    with pytest.raises(relprop.RuleError, match="MaxPool cannot explain node .* of kind 'conv'"):
        relprop.RelevanceGraph(toy_gm, {conv: relprop.MaxPool()})
    with pytest.raises(relprop.RuleError, match="unknown rules preset"):
        relprop.RelevanceGraph(toy_gm, "lrp-epsilon")
    with pytest.raises(relprop.RuleError, match="override 'conv2d_99' matches no node"):
        relprop.RelevanceGraph(toy_gm, {"conv2d_99": relprop.Gradient()})


def test_unsupported_op_is_our_error():
    with pytest.raises(relprop.RuleError, match="Op holds an op with no relevance rule: op aten.tanh"):
        relprop.attribute(Op(torch.tanh), torch.randn(2, 3), 0.0, lambda y: y.sum(1))


def test_untraced_graph_is_refused():
    gm = torch.fx.symbolic_trace(Op(torch.tanh))
    with pytest.raises(relprop.RuleError, match="has no .kind. in its metadata; trace the model"):
        relprop.RelevanceGraph(gm)


def test_channels_per_filter_sum_to_total(toy_gm):
    rg = relprop.RelevanceGraph(toy_gm)
    x, x0 = torch.randn(2, 2, 4, 4, dtype=D), torch.zeros(1, 2, 4, 4, dtype=D)
    r = rg.relevance(x, rg.reference(x0), lambda y: y[0][:, 1])
    assert set(r.channels) == {"conv", "fc"}
    # every path from the input goes through the conv: its filters carry the whole relevance (no bias leak in DeepLIFT)
    torch.testing.assert_close(r.channels["conv"].sum(1), r.score - r.reference_score, rtol=0, atol=1e-12)
    torch.testing.assert_close(r.channels["fc"][:, 1], r.score - r.reference_score, rtol=0, atol=1e-12)
    assert r.channels["fc"][:, 0].abs().max() == 0


def test_function_sum_to_reduces_broadcast():
    t = torch.ones(2, 3, 4)
    assert sum_to(t, (3, 1)).shape == (3, 1)
    assert float(sum_to(t, (3, 1)).sum()) == 24


class EveryRule(nn.Module):
    """SiLU, sigmoid, max-pool, softmax, product and quotient of data, a conv: one node for each rule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        y = F.max_pool2d(F.silu(self.conv(x)), 3, 1, 1)
        a, b = y.chunk(2, 1)
        s = torch.softmax(a, 1) * a / (torch.sigmoid(b) + 0.5)
        return s.flatten(1)


def test_rules_never_synchronise_with_the_host(monkeypatch):
    torch.manual_seed(4)
    gm = fxgraph.trace_module(EveryRule().to(D), torch.randn(2, 2, 5, 5, dtype=D))
    rg = relprop.RelevanceGraph(gm, {"conv": relprop.AlphaBeta(2, 1)})
    assert {type(b.rule).__name__ for b in rg.bound.values()} == {"AlphaBeta", "Rescale", "MaxPool", "Softmax",
                                                                  "Shapley"}
    x, x0 = torch.randn(3, 2, 5, 5, dtype=D), torch.randn(1, 2, 5, 5, dtype=D)
    x[0, 0, 0, 0] = x0[0, 0, 0, 0]  # a zero difference: the midpoint-derivative branch of the rescale rules
    refs = rg.reference(x0)

    def host(*_args, **_kwargs):
        raise AssertionError("a rule read a tensor's value on the host")

    getitem = torch.Tensor.__getitem__

    def no_mask(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            host()
        return getitem(self, index)

    with monkeypatch.context() as m:
        for name in ("__bool__", "item", "tolist", "nonzero", "__int__", "__float__"):
            m.setattr(torch.Tensor, name, host)
        m.setattr(torch.Tensor, "__getitem__", no_mask)
        m.setattr(torch, "nonzero", host)
        result = rg.forward(x, refs).backward(lambda y: y[0][:, :5].sum(1) - y[0][:, 7])
    assert result.delta.abs().max() < 1e-10


def test_maxpool_ties_share_equally():
    """The reference ties at three positions of the window, the input's max is at the fourth: the reference's part
    m·(1 − t) is split in three, t taken against the mean Δx of the tied positions; the law holds exactly."""
    g = graph_of(lambda x: F.max_pool2d(x, 2, 2), (1, 2, 2))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]], dtype=D)     # input max 5 at position 3
    x0 = torch.tensor([[[[4.0, 4.0], [4.0, 0.0]]]], dtype=D)    # reference max 4 at positions 0, 1, 2
    attr, delta = relprop.attribute(g, x, x0, lambda y: y.flatten(1).sum(1))
    dx = (x - x0).flatten()                                    # [-3, -2, -1, 5]
    dy, mean_b = 5.0 - 4.0, float(dx[:3].mean())               # Δy = 1, mean_B Δx = -2
    t = (dy - mean_b) / (float(dx[3]) - mean_b)                 # 3/7
    expected = torch.tensor([(1 - t) / 3 * float(dx[i]) for i in range(3)] + [t * float(dx[3])], dtype=D)
    torch.testing.assert_close(attr.flatten(), expected, rtol=0, atol=1e-15)
    assert abs(float(delta)) < 1e-15 and abs(float(attr.sum()) - dy) < 1e-15


@pytest.mark.parametrize("k,s,p", [(5, 1, 2), (2, 2, 0)])
def test_maxpool_result_invariant_under_permuting_tied_positions(k, s, p):
    """Constant references tie everywhere: relevance must not depend on which tied position an implementation calls
    the argmax.  Permuting the positions inside each (non-overlapping) window permutes the relevance the same way;
    for overlapping windows the relevance of a constant reference is invariant to the input's spatial flip."""
    torch.manual_seed(3)
    if s == k:  # non-overlapping 2x2 windows: permute the four positions of every window
        g = graph_of(lambda x: F.max_pool2d(x, k, s, p), (2, 4, 4))
        x = torch.randint(0, 3, (1, 2, 4, 4)).to(D)               # integer values: ties in the input too
        x0 = torch.full_like(x, 0.5)
        perm = torch.tensor([3, 1, 0, 2])

        def permute(t):
            w = t.reshape(1, 2, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 2, 4)[..., perm]
            return w.reshape(1, 2, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(t.shape)

        a, d1 = relprop.attribute(g, x, x0, lambda y: y.flatten(1).sum(1))
        b, d2 = relprop.attribute(g, permute(x), x0, lambda y: y.flatten(1).sum(1))
        torch.testing.assert_close(b, permute(a), rtol=0, atol=1e-14)
    else:  # overlapping windows (SPPF): a flipped input gives the flipped relevance
        g = graph_of(lambda x: F.max_pool2d(x, k, s, p), (2, 6, 6))
        x = torch.randint(0, 3, (1, 2, 6, 6)).to(D)
        x0 = torch.zeros_like(x)
        a, d1 = relprop.attribute(g, x, x0, lambda y: y.flatten(1).sum(1))
        b, d2 = relprop.attribute(g, x.flip(-1, -2), x0, lambda y: y.flatten(1).sum(1))
        torch.testing.assert_close(b, a.flip(-1, -2), rtol=0, atol=1e-13)
    assert abs(float(d1)) < 1e-12 and abs(float(d2)) < 1e-12

"""The generic layer `relprop.attribute`: agreement with an independent DeepLIFT, completeness on random DAGs of the
supported ops (hypothesis), K references, batching, and its errors."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import fxgraph  # noqa: E402
import relprop  # noqa: E402

D = torch.float64


class ReluCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


def deeplift_rescale(model: ReluCNN, x, x0, k):
    """DeepLIFT with the rescale rule written directly with autograd (Shrikumar et al. 2017, 'gradient of a modified
    network'): each ReLU is replaced by the line through (x0, relu(x0)) and (x, relu(x)), i.e. a fixed slope."""

    def slope(z, z0):
        dz = z - z0
        return torch.where(dz.abs() > 1e-12, (torch.relu(z) - torch.relu(z0)) / torch.where(dz == 0, 1, dz),
                           (z > 0).to(z.dtype))

    with torch.no_grad():
        z1, z1_0 = model.c1(x), model.c1(x0)
        s1 = slope(z1, z1_0)
        z2, z2_0 = model.c2(torch.relu(z1)), model.c2(torch.relu(z1_0))
        s2 = slope(z2, z2_0)
    xr = x.clone().requires_grad_(True)
    # the same affine maps, ReLU replaced by a_ref + s·(z − z_ref): its gradient is the DeepLIFT multiplier
    h1 = torch.relu(z1_0) + s1 * (model.c1(xr) - z1_0)
    h2 = torch.relu(z2_0) + s2 * (model.c2(h1) - z2_0)
    out = model.fc(h2.flatten(1))[:, k].sum()
    (grad,) = torch.autograd.grad(out, xr)
    return grad * (x - x0)


def test_matches_independent_deeplift_on_relu_cnn():
    torch.manual_seed(0)
    model = ReluCNN().to(D).eval()
    x, x0 = torch.randn(5, 3, 8, 8, dtype=D), torch.randn(5, 3, 8, 8, dtype=D) * 0.1
    attr, delta = relprop.attribute(model, x, x0, lambda y: y[:, 2])
    expected = deeplift_rescale(model, x, x0, 2)
    torch.testing.assert_close(attr, expected, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        diff = model(x)[:, 2] - model(x0)[:, 2]
    torch.testing.assert_close(attr.flatten(1).sum(1), diff, rtol=1e-12, atol=1e-12)
    assert delta.abs().max() < 1e-12
    assert (attr - torch.autograd.functional.jacobian(lambda z: model(z)[:, 2].sum(), x) * (x - x0)).abs().max() > 1e-4


class MaxPoolCNN(nn.Module):
    """ReLU, max-pool (overlapping and not) and a linear layer: the toy the issue names."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 10)

    def forward(self, x):
        y = F.max_pool2d(torch.relu(self.c1(x)), 3, 1, 1)
        y = F.max_pool2d(torch.relu(self.c2(y)), 2)
        return self.fc(y.flatten(1))


def test_toy_cnn_with_maxpool_and_linear_conserves_in_float32_and_float64():
    torch.manual_seed(1)
    for dtype, tol in ((D, 1e-12), (torch.float32, 1e-4)):
        model = MaxPoolCNN().to(dtype)
        x = torch.randn(6, 1, 6, 6, dtype=dtype)
        attr, delta = relprop.attribute(model, x, 0.0, lambda y: y[:, 4])
        with torch.no_grad():
            diff = model(x)[:, 4] - model(torch.zeros(1, 1, 6, 6, dtype=dtype))[:, 4]
        assert (delta.abs() / diff.abs().clamp(min=1)).max() < tol


def test_k_references_are_the_mean_of_single_reference_runs():
    torch.manual_seed(2)
    model = MaxPoolCNN().to(D)
    x = torch.randn(3, 1, 6, 6, dtype=D)
    refs = torch.randn(4, 3, 1, 6, 6, dtype=D)
    attr, delta = relprop.attribute(model, x, refs, lambda y: y[:, 1])
    singles = [relprop.attribute(model, x, r, lambda y: y[:, 1])[0] for r in refs]
    torch.testing.assert_close(attr, torch.stack(singles).mean(0), rtol=1e-12, atol=1e-14)
    assert delta.abs().max() < 1e-12
    shared = torch.randn(2, 1, 1, 6, 6, dtype=D)  # K references shared by every input
    attr, delta = relprop.attribute(model, x, shared, lambda y: y[:, 1])
    assert delta.abs().max() < 1e-12


def test_batch_equals_one_by_one():
    torch.manual_seed(3)
    model = MaxPoolCNN().to(D)
    x, x0 = torch.randn(3, 1, 6, 6, dtype=D), torch.randn(3, 1, 6, 6, dtype=D)
    graph = relprop.relevance_graph(model, x)
    attr, _ = relprop.attribute(graph, x, x0, lambda y: y[:, 7])
    for i in range(3):
        one, _ = relprop.attribute(graph, x[i:i + 1], x0[i:i + 1], lambda y: y[:, 7])
        torch.testing.assert_close(attr[i:i + 1], one, rtol=1e-12, atol=1e-14)


def test_batched_backward_equals_one_target_at_a_time():
    torch.manual_seed(5)
    graph = relprop.relevance_graph(MaxPoolCNN().to(D), torch.randn(2, 1, 6, 6, dtype=D))
    x, refs = torch.randn(2, 1, 6, 6, dtype=D), graph.reference(torch.zeros(1, 1, 6, 6, dtype=D))
    loop = graph.relevance(x, refs, lambda o: o[0][:, :4], chunk=1)
    vmap = graph.relevance(x, refs, lambda o: o[0][:, :4], chunk=3)
    torch.testing.assert_close(vmap.attribution, loop.attribution, rtol=1e-12, atol=1e-14)
    for key in loop.channels:
        torch.testing.assert_close(vmap.channels[key], loop.channels[key], rtol=1e-12, atol=1e-14)
    assert loop.attribution.shape == (2, 4, 1, 6, 6) and loop.delta.abs().max() < 1e-12


def test_two_phase_pass_targets_chosen_from_the_outputs():
    torch.manual_seed(6)
    graph = relprop.relevance_graph(MaxPoolCNN().to(D), torch.randn(2, 1, 6, 6, dtype=D))
    x, refs = torch.randn(2, 1, 6, 6, dtype=D), graph.reference(torch.zeros(1, 1, 6, 6, dtype=D))
    step = graph.forward(x, refs)
    assert isinstance(step, relprop.Pass) and not step.outputs[0].requires_grad
    torch.testing.assert_close(step.outputs[0], graph(x)[0])
    torch.testing.assert_close(step.reference_outputs[0], graph(torch.zeros(1, 1, 6, 6, dtype=D))[0])
    # phase two: explain the top-scoring output of example 0 for every example, given as weights (one-hot)
    top = int(step.outputs[0][0].argmax())
    weights = torch.zeros(2, 10, dtype=D)
    weights[0, top], weights[1, (top + 1) % 10] = 1, 1
    by_weights = step.backward(weights)
    by_function = graph.relevance(x, refs, lambda o: o[0][:, [top, (top + 1) % 10]])
    torch.testing.assert_close(by_weights.attribution, by_function.attribution, rtol=0, atol=0)
    torch.testing.assert_close(by_weights.score, step.outputs[0][:, [top, (top + 1) % 10]])
    assert by_weights.delta.abs().max() < 1e-12
    one = graph.forward(x, refs).backward(weights[0])  # weights of one example's shape: one target, (B,)
    torch.testing.assert_close(one.attribution, by_weights.attribution[:, 0], rtol=0, atol=0)
    with pytest.raises(relprop.RelpropError, match="already backpropagated"):
        step.backward(weights)
    with pytest.raises(relprop.RelpropError, match="fit neither one example"):
        graph.forward(x, refs).backward(torch.ones(3, 4, dtype=D))
    with pytest.raises(relprop.RelpropError, match="reference batch 3 must be 1 or the input batch 2"):
        graph.forward(x, graph.reference(torch.zeros(3, 1, 6, 6, dtype=D)))


def test_attribute_errors():
    model = MaxPoolCNN().to(D)
    x = torch.randn(2, 1, 6, 6, dtype=D)
    with pytest.raises(relprop.RelpropError, match="target_fn must return a tensor of shape \\(2,\\)"):
        relprop.attribute(model, x, 0.0, lambda y: y)
    with pytest.raises(relprop.RelpropError, match="do not fit inputs"):
        relprop.attribute(model, x, torch.zeros(2, 1, 5, 5, dtype=D), lambda y: y[:, 0])
    with pytest.raises(relprop.RelpropError, match="cannot attribute through"):
        relprop.attribute("not a model", x, 0.0, lambda y: y[:, 0])


# -- random DAGs of the supported ops ---------------------------------------------------------------------------------

class RandomDAG(nn.Module):
    """A random network of the ops YOLOv8/YOLO11 use: conv, SiLU/ReLU/sigmoid, chunk, cat, skip add, product of
    branches, overlapping max-pools (SPPF-like, reused), nearest upsample, softmax over channels, attention (matmul,
    softmax along the last dim, detach), multi-head attention shaped like ultralytics's (qkv conv, 4-D matmul, bmm,
    proj conv), and a final linear layer."""

    def __init__(self, plan: list[tuple[str, int]], width: int, size: int):
        super().__init__()
        self.plan = plan
        self.convs = nn.ModuleList()
        c = width
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        for op, arg in plan:
            if op in ("conv", "conv_s2"):
                self.convs.append(nn.Conv2d(c, arg, 3, stride=2 if op == "conv_s2" else 1, padding=1))
                c = arg
            elif op == "sppf":
                self.convs.append(nn.Conv2d(4 * c, c, 1))
            elif op == "cat_chunk":
                c = c + c // 2 if c % 2 == 0 else c
            elif op == "mhsa":
                self.convs.append(nn.Conv2d(c, 3 * c, 1))  # qkv
                self.convs.append(nn.Conv2d(c, c, 1))  # proj
        self.out_channels = c
        with torch.no_grad():
            probe = self._features(torch.zeros(1, 3, size, size))
        self.fc = nn.Linear(probe.numel(), 3)

    def _features(self, x):
        y = F.silu(self.stem(x))
        convs = iter(self.convs)
        for op, arg in self.plan:
            if op in ("conv", "conv_s2"):
                y = F.silu(next(convs)(y)) if arg % 2 else torch.relu(next(convs)(y))
            elif op == "sppf":
                p1 = F.max_pool2d(y, 5, 1, 2)
                p2 = F.max_pool2d(p1, 5, 1, 2)
                p3 = F.max_pool2d(p2, 5, 1, 2)
                y = F.silu(next(convs)(torch.cat([y, p1, p2, p3], 1)))
            elif op == "cat_chunk" and y.shape[1] % 2 == 0:
                a, b = y.chunk(2, 1)
                y = torch.cat([a, b, torch.sigmoid(b)], 1)
            elif op == "skip":
                y = y + torch.sigmoid(y) * y
            elif op == "product":
                y = y * torch.sigmoid(y + 1.0)
            elif op == "softmax":
                y = torch.softmax(y, 1) * 4.0
            elif op == "up_down":
                y = F.max_pool2d(F.interpolate(y, scale_factor=2.0, mode="nearest"), 2) - 0.5 * y
            elif op == "attention":  # C2PSA-shaped: softmax(qᵀk)·v over positions, on a detached copy of q
                b, c, h, w = y.shape
                q = k = v = y.flatten(2)
                attn = torch.softmax(q.detach().transpose(-2, -1) @ k * 0.5, dim=-1)
                y = y + (v @ attn.transpose(-2, -1)).view(b, c, h, w)
            elif op == "mhsa":  # ultralytics Attention-shaped: qkv conv, heads, scaled qᵀk (4-D matmul), softmax,
                b, c, h, w = y.shape  # v·attnᵀ as a bmm over (batch·heads), proj conv, residual add
                heads = 2 if c % 2 == 0 else 1
                d = c // heads
                qkv, proj = next(convs), next(convs)
                q, k, v = qkv(y).view(b, heads, 3 * d, h * w).split([d, d, d], dim=2)
                attn = torch.softmax((q.transpose(-2, -1) @ k) * d ** -0.5, dim=-1)
                out = torch.bmm(v.reshape(-1, d, h * w), attn.reshape(-1, h * w, h * w).transpose(1, 2))
                y = y + proj(out.reshape(b, c, h, w))
        return y

    def forward(self, x):
        return self.fc(self._features(x).flatten(1))


OPS = st.sampled_from(["conv", "conv_s2", "sppf", "cat_chunk", "skip", "product", "softmax", "up_down", "attention",
                       "mhsa"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(OPS, st.integers(2, 6)), min_size=2, max_size=6),
    width=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 3.0),
)
def test_completeness_on_random_dags(plan, width, seed, scale):
    torch.manual_seed(seed)
    size = 8
    strides = sum(op == "conv_s2" for op, _ in plan)
    if strides > 2:
        plan = [p for p in plan if p[0] != "conv_s2"]
    model = RandomDAG(plan, width, size).to(D).eval()
    x = torch.randn(3, 3, size, size, dtype=D) * scale
    x0 = torch.randn(3, 3, size, size, dtype=D) * scale
    x0[0] = x[0] + 1e-11 * torch.randn_like(x[0])  # a reference almost equal to the input: secants degenerate
    attr, delta = relprop.attribute(model, x, x0, lambda y: y[:, 0] - 2 * y[:, 2])
    with torch.no_grad():
        diff = (model(x)[:, 0] - 2 * model(x)[:, 2]) - (model(x0)[:, 0] - 2 * model(x0)[:, 2])
    assert torch.isfinite(attr).all()
    assert (delta.abs() / diff.abs().clamp(min=1)).max() <= 1e-8
    torch.testing.assert_close(attr.flatten(1).sum(1), diff, rtol=1e-8, atol=1e-8)


def test_attribute_accepts_a_traced_graph_module():
    torch.manual_seed(4)
    model = ReluCNN().to(D)
    x = torch.randn(2, 3, 8, 8, dtype=D)
    gm = fxgraph.trace_module(model, x)
    a1, _ = relprop.attribute(gm, x, 0.0, lambda y: y[:, 0])
    a2, _ = relprop.attribute(model, x, 0.0, lambda y: y[:, 0])
    torch.testing.assert_close(a1, a2)

"""Relevance rules: one small class per rule, bound to graph nodes by a composite (see `relprop.composites`).

A rule decides, for one fx node, whether the node must be rewritten at all (the plain gradient needs no rewrite:
autograd already does it), and if so what to keep from the reference pass (`record`) and how to run the op on the
input through its autograd Function (`explain`, see `relprop.functions` for the formulas).

    Gradient   linear ops (conv, BN in eval, add, cat, split, upsample, views, affine anchor decoding)   m_x = ∂y/∂x·m_y
    Rescale    elementwise nonlinearities (SiLU, sigmoid, ReLU, sin, cos)                             m_x = m_y·Δy/Δx
    MaxPool    max-pool, overlapping windows included            Δy = t·mean Δx_argmaxes + (1−t)·mean Δx_refargmaxes
    Softmax    softmax along a dim (DFL)                          rescale on exp(x − L), L = logsumexp split between its tangents
    Shapley    product or quotient of two data tensors                                   Δ(uv) = v̄·Δu + ū·Δv
    MatMul     matrix product of two data tensors (attention)                      Δ(AB) = ½ΔA·(B+B0) + ½(A+A0)·ΔB
    AlphaBeta  LRP-αβ on differences for a convolution (the DetDSHAP paper's head rule)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx

from fxgraph import info, ops

from . import functions as fn
from .errors import RuleError

aten = torch.ops.aten


@dataclass(frozen=True)
class Bound:
    """A rule bound to one node: the op to run and the positions of the node's data (input-dependent) arguments."""

    rule: "Rule"
    target: Callable
    data: tuple[int, ...]
    name: str

    def record(self, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
        return self.rule.record(self, args, kwargs)

    def explain(self, args: tuple, kwargs: dict, saved: tuple, eps: float) -> Any:
        return self.rule.explain(self, args, kwargs, saved, eps)


def _data_positions(node: fx.Node) -> tuple[int, ...]:
    return tuple(
        i for i, a in enumerate(node.args) if isinstance(a, fx.Node) and info(a).kind not in ops.NON_DATA
    )


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
        return Bound(self, node.target, _data_positions(node), node.name)

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


def _silu_derivative(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _sigmoid_derivative(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _cos_derivative(z: torch.Tensor) -> torch.Tensor:
    return -torch.sin(z)


def _relu_derivative(z: torch.Tensor) -> torch.Tensor:
    return (z > 0).to(z.dtype)


class Rescale(Rule):
    """DeepLIFT's rescale rule for an elementwise op:  m_x = m_y·Δy/Δx,  the derivative where |Δx| ≤ eps: at x0 for
    smooth kinds (SiLU, sigmoid; computed once per reference), at (x+x0)/2 otherwise.

    `derivative` overrides the built-in derivative of the node's kind (needed for a kind outside silu/sigmoid/relu).
    """

    DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "silu": _silu_derivative,
        "sigmoid": _sigmoid_derivative,
        "relu": _relu_derivative,
        "sin": torch.cos,  # OBB's angle decode: the secant (sin x − sin x0)/(x − x0), exact like SiLU's
        "cos": _cos_derivative,
    }
    kinds = frozenset(DERIVATIVES)
    # smooth kinds take their tangent at the reference, f'(x0), computed once per reference pass; ReLU keeps the
    # midpoint (its kink: f'(0) = 0 would lose Δy = x for x0 = 0 < x ≤ eps)
    SMOOTH = frozenset({"silu", "sigmoid", "sin", "cos"})

    def __init__(self, derivative: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.derivative = derivative

    def bind(self, node: fx.Node) -> Bound | None:
        if self.derivative is None:
            return super().bind(node)
        return Bound(self, node.target, _data_positions(node), node.name)

    def _derivative(self, b: Bound) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.derivative is not None:
            return self.derivative
        return self.DERIVATIVES[self._kind(b)]

    @staticmethod
    def _kind(b: Bound) -> str:
        from fxgraph.ops import kind_of_target

        return kind_of_target(b.target)

    def record(self, b, args, kwargs):
        y = b.target(*args, **kwargs)
        if self.derivative is None and self._kind(b) in self.SMOOTH:  # f'(x0) once per reference (see RescaleFn)
            return y, (args[0], y, self._derivative(b)(args[0]))
        return y, (args[0], y, None)

    def explain(self, b, args, kwargs, saved, eps):
        x0, y0, tangent = saved
        rest = args[1:]

        def op(x):
            return b.target(x, *rest, **kwargs)

        return fn.RescaleFn.apply(args[0], x0, y0, op, self._derivative(b) if tangent is None else tangent, eps)


class MaxPool(Rule):
    """Max-pool rule (see `functions.MaxPoolFn`): each window's Δy goes to the input's and the reference's maxima,
    split equally among tied positions."""

    kinds = frozenset({"maxpool"})

    def record(self, b, args, kwargs):
        if kwargs:
            raise RuleError(f"max-pool node {b.name}: keyword arguments {sorted(kwargs)} are not supported")
        y, idx = aten.max_pool2d_with_indices.default(*args)
        out = (y, idx) if b.target is aten.max_pool2d_with_indices.default else y
        return out, (args[0], idx, y)

    def explain(self, b, args, kwargs, saved, eps):
        x0, idx0, y0 = saved
        y, idx = fn.MaxPoolFn.apply(args[0], x0, idx0, y0, tuple(args[1:]), 0.0)  # any gap ≠ 0 is safe
        return (y, idx) if b.target is aten.max_pool2d_with_indices.default else y


class Softmax(Rule):
    """Exact, bounded softmax rule (see `functions.SoftmaxFn`): rescale on exp(x − L), and the log-normaliser
    L = logsumexp(x) split between its tangents at x and x0."""

    kinds = frozenset({"softmax"})

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0],)

    def explain(self, b, args, kwargs, saved, eps):
        (x0,) = saved
        x = args[0]
        if b.target is aten._softmax.default and args[2] and x.dtype != torch.float32:  # half_to_float
            x, x0 = x.float(), x0.float()
        return fn.SoftmaxFn.apply(x, x0, int(args[1]), eps)


class Shapley(Rule):
    """Product or quotient of two data tensors, split exactly and symmetrically (the two-player Shapley value).

    A product with a parameter, a constant or a number is linear and keeps the plain gradient.
    """

    kinds = frozenset({"mul", "div"})

    def bind(self, node: fx.Node) -> Bound | None:
        b = super().bind(node)
        if len(b.data) < 2:
            return None
        if b.data != (0, 1) or node.kwargs:
            raise RuleError(f"node {node.name} ({node.target}): unexpected arguments for a product of two tensors")
        return b

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0], args[1])

    def explain(self, b, args, kwargs, saved, eps):
        u0, v0 = saved
        from fxgraph.ops import kind_of_target

        f = fn.ProductFn if kind_of_target(b.target) == "mul" else fn.QuotientFn
        return f.apply(args[0], args[1], u0, v0)


class Identity(Gradient):
    """Ops that compute nothing (kind "identity"): the plain gradient, and `detach` is run as the identity so that
    relevance flows through it: we explain what the network computes, not where training stops gradients."""

    def bind(self, node: fx.Node) -> Bound | None:
        if getattr(node.target, "overloadpacket", None) is not aten.detach:
            return None
        return Bound(self, node.target, _data_positions(node), node.name)

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), ()

    def explain(self, b, args, kwargs, saved, eps):
        return args[0].view_as(args[0])


class MatMul(Rule):
    """Matrix product of two data tensors (attention's q·k and v·attn), the bilinear Shapley split
    Δ(AB) = ½·ΔA·(B + B0) + ½·(A + A0)·ΔB, exact (see `functions.MatMulFn`).

    A product with a parameter or a constant is linear and keeps the plain gradient.
    """

    kinds = frozenset({"matmul"})

    def bind(self, node: fx.Node) -> Bound | None:
        b = super().bind(node)
        if len(b.data) < 2:
            return None
        if b.data != (0, 1) or node.kwargs:
            raise RuleError(f"node {node.name} ({node.target}): unexpected arguments for a product of two matrices")
        return b

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0], args[1])

    def explain(self, b, args, kwargs, saved, eps):
        a0, b0 = saved
        return fn.MatMulFn.apply(args[0], args[1], a0, b0)


class AlphaBeta(Rule):
    """LRP-αβ on DeepLIFT differences for a 2-D convolution, α − β = 1 so that relevance is conserved
    (see `functions.AlphaBetaConvFn`).  DetDSHAP applies it to the last convolutions before the detection outputs.
    """

    kinds = frozenset({"conv"})

    def __init__(self, alpha: float = 1.0, beta: float = 0.0):
        if abs(alpha - beta - 1) > 1e-12 or beta < 0:
            raise RuleError(f"AlphaBeta needs alpha - beta = 1 and beta >= 0 to conserve relevance; got {alpha}, {beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def bind(self, node: fx.Node) -> Bound | None:
        b = super().bind(node)
        if node.target is not aten.conv2d.default or isinstance(_conv_args(node.args)[1][1], str):
            raise RuleError(f"AlphaBeta supports aten.conv2d with numeric padding only; node {node.name} is {node.target}")
        return b

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), (args[0],)

    def explain(self, b, args, kwargs, saved, eps):
        (x0,) = saved
        (x, w, bias), conv_args = _conv_args(args)
        return fn.AlphaBetaConvFn.apply(x, x0, w, bias, conv_args, self.alpha, self.beta, eps)

    def __repr__(self) -> str:
        return f"AlphaBeta(alpha={self.alpha}, beta={self.beta})"


def _conv_args(args: tuple) -> tuple[tuple, tuple]:
    """aten.conv2d's (input, weight, bias) and (stride, padding, dilation, groups) with their defaults filled in."""
    full = list(args) + [None, [1, 1], [0, 0], [1, 1], 1][len(args) - 2:]
    return tuple(full[:3]), tuple(full[3:7])

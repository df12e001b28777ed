"""BatchNorm in eval: the plain gradient (it is affine), m_x = m_y·γ/√(σ²+ε), with the incoming gradient made
contiguous first: torch 2.14.1's CPU batch_norm backward returns a wrong input gradient when the input is contiguous
and the gradient channels-last strided (seen at batch 1), as YOLO12's AAttn (`flatten(2).transpose(1, 2)`) hands it."""

from __future__ import annotations

import torch

from .base import Rule


class ContiguousGradFn(torch.autograd.Function):
    """Identity whose backward passes the gradient on in contiguous memory layout (a no-op when it already is)."""

    @staticmethod
    def forward(ctx, y):  # noqa: D102
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad.contiguous()


class BatchNorm(Rule):
    """The gradient rule for kind "batchnorm" (`aten.batch_norm` or `_native_batch_norm_legit_no_training`, whose
    first output is the normalised tensor), run on a contiguous incoming gradient."""

    kinds = frozenset({"batchnorm"})

    def record(self, b, args, kwargs):
        return b.target(*args, **kwargs), ()

    def explain(self, b, args, kwargs, saved, eps):
        out = b.target(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return ContiguousGradFn.apply(out)
        return (ContiguousGradFn.apply(out[0]), *out[1:])

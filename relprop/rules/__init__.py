"""Relevance rules: one module per rule family, each holding the rule (bound to graph nodes by a composite, see
`relprop.composites`) beside its autograd Function, whose forward is the op and whose backward is the rule.

    base       Gradient   linear ops (conv, add, cat, split, upsample, views)                    m_x = ∂y/∂x·m_y
               Identity   ops that compute nothing; `detach` passes relevance
    batchnorm  BatchNorm  BN in eval: the gradient, taken on a contiguous incoming gradient (a torch CPU bug)
    rescale    Rescale    elementwise nonlinearities (SiLU, sigmoid, ReLU; `Rescale.register`)   m_x = m_y·Δy/Δx
    maxpool    MaxPool    max-pool, overlapping windows included      Δy = t·mean Δx_argmaxes + (1−t)·mean Δx_refargmaxes
    softmax    Softmax    softmax along a dim (DFL)                  rescale on exp(x − L), L split between its tangents
    products   Shapley    product or quotient of two data tensors                           Δ(uv) = v̄·Δu + ū·Δv
               MatMul     matrix product of two data tensors (attention)          Δ(AB) = ½ΔA·(B+B0) + ½(A+A0)·ΔB
    alphabeta  AlphaBeta  LRP-αβ on differences for a convolution (the DetDSHAP paper's head rule)

A rule decides, for one fx node, whether the node must be rewritten at all (the plain gradient needs no rewrite), and
if so what to keep from the reference pass (`record`) and how to run the op on the input (`explain`).
"""

from .alphabeta import AlphaBeta
from .base import Bound, Gradient, Identity, Rule
from .batchnorm import BatchNorm
from .maxpool import MaxPool
from .products import MatMul, Shapley
from .rescale import Rescale
from .softmax import Softmax

__all__ = ["AlphaBeta", "BatchNorm", "Bound", "Gradient", "Identity", "MatMul", "MaxPool", "Rescale", "Rule", "Shapley",
           "Softmax"]

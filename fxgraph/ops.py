"""The closed vocabulary of op kinds that a flat graph may hold, and the map from ATen ops to it.

Every later stage (relevance rules, channel coupling, FLOP counting) dispatches on these kinds, never on
op names, so an op that is missing here is rejected at trace time rather than mis-handled later.
"""

from __future__ import annotations

import operator

import torch

aten = torch.ops.aten

# Graph-structural kinds, set from the fx node's `op` rather than its target.
INPUT, OUTPUT, PARAM, CONST, SIZE = "input", "output", "param", "const", "size"
# Kinds whose value does not come from the input's values: model state, folded constants and batch-size reads.
# An op's arguments of these kinds are not its data (fxgraph.data_args leaves them out).
NON_DATA = frozenset({PARAM, CONST, SIZE})
# Kinds that compute nothing: NON_DATA and the graph's ends.
STRUCTURAL = NON_DATA | {INPUT, OUTPUT}

# ATen overload packet -> kind.  One kind may cover several spellings of the same operation.
_ATEN_KINDS: dict[object, str] = {
    aten.conv2d: "conv",
    aten.convolution: "conv",
    aten.conv_transpose2d: "conv_transpose",
    aten.batch_norm: "batchnorm",
    aten._native_batch_norm_legit_no_training: "batchnorm",
    aten.silu: "silu",
    aten.relu: "relu",
    aten.sigmoid: "sigmoid",
    aten.softmax: "softmax",
    aten._softmax: "softmax",
    aten.cat: "cat",
    aten.chunk: "split",
    aten.split: "split",
    aten.split_with_sizes: "split",
    aten.add: "add",
    aten.sub: "sub",
    aten.mul: "mul",
    aten.div: "div",
    aten.upsample_nearest2d: "upsample",
    aten.max_pool2d: "maxpool",
    aten.max_pool2d_with_indices: "maxpool",
    aten.avg_pool2d: "avgpool",
    aten.adaptive_avg_pool2d: "avgpool",
    aten.linear: "linear",
    aten.matmul: "matmul",
    aten.bmm: "matmul",
    aten.view: "reshape",
    aten.reshape: "reshape",
    aten._unsafe_view: "reshape",
    aten.flatten: "reshape",
    aten.unsqueeze: "reshape",
    aten.squeeze: "reshape",
    aten.transpose: "permute",
    aten.permute: "permute",
    aten.t: "permute",
    aten.contiguous: "identity",
    aten.clone: "identity",
    aten.alias: "identity",
    aten.dropout: "identity",
    aten.detach: "identity",
    aten.slice: "slice",
    aten.select: "select",
    aten.sin: "sin",
    aten.cos: "cos",
    aten.sym_size: SIZE,
}

# Kinds that compute on tensors (the vocabulary later stages must cover).
TENSOR_KINDS = frozenset(_ATEN_KINDS.values()) - {SIZE} | {"getitem"}
ALL_KINDS = TENSOR_KINDS | STRUCTURAL

# Kinds that are linear in their data input(s) for fixed parameters: DeepLIFT uses the plain gradient there.
LINEAR_KINDS = frozenset(
    {"conv", "conv_transpose", "batchnorm", "cat", "split", "getitem", "add", "sub", "upsample", "avgpool",
     "linear", "reshape", "permute", "identity", "slice", "select"}
)
# Products of two data operands (bilinear): matmul.
BILINEAR_KINDS = frozenset({"matmul"})
# Elementwise nonlinearities of one input.
ELEMENTWISE_KINDS = frozenset({"silu", "relu", "sigmoid", "sin", "cos"})
# Index ops (slice, select): linear, their dim/start/end/step or index are the node's own arguments (metadata).
INDEX_KINDS = frozenset({"slice", "select"})
# Kinds with trainable weights whose output channels are filters.
FILTER_KINDS = frozenset({"conv", "conv_transpose", "linear"})


# Python arithmetic on symbolic sizes (batch × area in YOLO12's attention reshapes): SIZE, never data.
SIZE_OPERATORS = frozenset({operator.mul, operator.add, operator.sub, operator.floordiv, operator.mod,
                            operator.truediv, operator.neg})


def kind_of_target(target: object) -> str | None:
    """Return the kind of an fx call_function target, or None if it is outside the vocabulary (Python arithmetic
    is SIZE only where fxgraph.tracer sees it compute a size, not a tensor)."""
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    return _ATEN_KINDS.get(packet)

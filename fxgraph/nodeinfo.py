"""`NodeInfo`: the one typed record of what fxgraph knows about a node of a flat graph.

Set once at trace time (`fxgraph.tracer.annotate`, and `fxgraph.trace` for the model's roles) and read by every
later stage through `fxgraph.info(node)`, in the spirit of torch.fx ShapeProp's `TensorMetadata`:

    info = fxgraph.info(node)
    info.kind, info.layer, info.module_path, info.module_type, info.shape, info.channels
    info.role == fxgraph.nodeinfo.HEAD_OUTPUT and info.output in (BOX, CLASSES, MASK_COEFFICIENTS, DFL, PROTO)

The record is immutable; a pass that changes what it describes (surgery changes shapes, a BatchNorm fold marks
its conv) replaces it with `update(node, field=value)`.  The record is the only copy of these facts: no flat
`node.meta` keys repeat them.  fx's own keys (`val`, `tensor_meta`, `nn_module_stack`, `stack_trace`) are left as torch.export wrote them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import fx

from .errors import FxGraphError

INFO_KEY = "fxgraph_info"  # node.meta[INFO_KEY] holds the node's NodeInfo

# Roles: what a node is for in the model, beyond its op kind.  None for an ordinary node.
HEAD_OUTPUT = "head_output"  # its output channels are the model's outputs (never pruned; LRP-αβ in the paper)
ROLES = frozenset({HEAD_OUTPUT})

# What a head-output node produces.
BOX = "box_distribution"  # 4 * reg_max bins of the box-side distribution (Detect cv2.i last conv)
CLASSES = "classes"  # nc class logits (cv3.i last conv)
MASK_COEFFICIENTS = "mask_coefficients"  # nm mask coefficients (Segment cv4.i last conv)
DFL = "dfl"  # the DFL's fixed integral conv
PROTO = "proto"  # the nm mask prototypes (Segment proto.cv3)
KEYPOINTS = "keypoints"  # nk raw keypoint values (Pose cv4.i last conv, Pose26 cv4_kpts.i)
ANGLE = "angle"  # the raw rotation angle (OBB cv4.i last conv)
HEAD_OUTPUTS = frozenset({BOX, CLASSES, MASK_COEFFICIENTS, DFL, PROTO, KEYPOINTS, ANGLE})
# Head outputs computed by a conv from learned features (DFL and Proto's output are not maps of one candidate).
PREDICTION_OUTPUTS = frozenset({BOX, CLASSES, MASK_COEFFICIENTS, KEYPOINTS, ANGLE})

_MISSING = object()


class MissingNodeInfoError(FxGraphError, KeyError):
    """A node carries no NodeInfo: it was not made by fxgraph's tracer (or a pass added it without one)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class NodeInfo:
    """The facts of one node.

    kind         op kind, from the closed vocabulary of fxgraph.ops (`conv`, `cat`, ... `param`, `input`)
    layer        ultralytics layer index (`model.<i>....`), or None
    module_path  the module the op came from (`model.4.m.0.cv1.conv`); a parameter's owner; "" at the graph's ends
    module_type  that module's class name (`Conv2d`, `Detect`); a parameter takes its consumer's
    shape        output shape, the batch dimension None (dynamic); a parameter's tensor shape
    channels     shape[1] of a tensor output (None for parameters, constants and rank < 2)
    param        for a parameter node, its name in the model's state dict
    folded_bn    for a conv with a BatchNorm folded in, that BatchNorm's module path
    role         HEAD_OUTPUT or None: set from the model at trace time
    output       for a HEAD_OUTPUT node, what it produces (BOX, CLASSES, MASK_COEFFICIENTS, DFL, PROTO, KEYPOINTS,
                 ANGLE)
    """

    kind: str
    layer: int | None = None
    module_path: str = ""
    module_type: str = ""
    shape: tuple[int | None, ...] | None = None
    channels: int | None = None
    param: str | None = None
    folded_bn: str | None = None
    role: str | None = None
    output: str | None = None

    def replace(self, **changes: Any) -> "NodeInfo":
        return dataclasses.replace(self, **changes)

    @property
    def is_head_output(self) -> bool:
        return self.role == HEAD_OUTPUT


def info(node: fx.Node, default: Any = _MISSING) -> NodeInfo:
    """The NodeInfo of `node`; `default` if it has none and a default is given, else MissingNodeInfoError."""
    found = node.meta.get(INFO_KEY)
    if found is None:
        if default is not _MISSING:
            return default
        raise MissingNodeInfoError(
            f"node {node.name} ({node.op} {node.target}) has no NodeInfo; trace the model with fxgraph.trace or "
            "fxgraph.trace_module, or give nodes a pass adds one with fxgraph.nodeinfo.set_info"
        )
    return found


def set_info(node: fx.Node, record: NodeInfo) -> NodeInfo:
    """Store `record` as the node's NodeInfo; returns it."""
    node.meta[INFO_KEY] = record
    return record


def update(node: fx.Node, **changes: Any) -> NodeInfo:
    """Replace fields of the node's NodeInfo (it must have one); returns the new record."""
    return set_info(node, info(node).replace(**changes))

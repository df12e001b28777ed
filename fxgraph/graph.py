"""`FlatGraph`: the flat fx graph of one ultralytics model (detect, segment, pose, OBB, classify), plus what later stages need of it."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import fx, nn

from .nodeinfo import info


@dataclass(frozen=True)
class ModelFacts:
    """What the traced model says about itself, read from the model once at trace time (`fxgraph.trace`), so that
    later stages never re-derive it from layer names or constants.

    backbone_layers  len(model.yaml["backbone"]): layers 0 .. backbone_layers - 1 are the backbone
                     (None when the model carries no yaml)
    stride           the largest stride of the model (model.stride): image sizes must be multiples of it
    head_layer       index of the head (Detect/Segment) in model.model
    head_type        the head's class name
    family           the model family, from its yaml file name (e.g. "yolov8", "yolo11", "yolo26"; None if unknown)
    branch           the head branch the graph computes: "one2many" (dense, boxes for NMS), "one2one" (end-to-end,
                     pre-selection scores; ultralytics's top-k stays outside the graph), None (no one2one head)
    box_format       "xywh", "xyxy" or "xywhr": how the first 4 rows of `pred` hold each anchor's box, in input
                     pixels ("xywhr": a rotated centre box whose angle in radians is pred's last row); None for a
                     classifier (no boxes)
    pred_layout      the layout of the prediction tensor, e.g. "B,4+nc,A", "B,4+nc+nm,A", "B,4+nc+nk,A" (pose),
                     "B,4+nc+1,A" (OBB) or "B,nc" (classify: class probabilities)
    task             "detect", "segment", "pose", "obb" or "classify"
    kpt_shape        (keypoints, values per keypoint: 2 for x, y or 3 with visibility) of a pose model, else None
    kpt_names        the keypoints' names where the model records them (a trained pose model's `kpt_names`)
    head_outputs     module path -> what it outputs (fxgraph.nodeinfo.BOX, CLASSES, MASK_COEFFICIENTS, DFL, PROTO),
                     for every module whose output channels are the model's outputs; the graph's nodes of these
                     modules carry role HEAD_OUTPUT in their NodeInfo
    """

    backbone_layers: int | None
    stride: int
    head_layer: int
    head_type: str
    head_outputs: dict[str, str] = field(default_factory=dict)
    family: str | None = None
    branch: str | None = None
    box_format: str | None = "xywh"
    pred_layout: str = "B,4+nc,A"
    task: str = "detect"
    kpt_shape: tuple[int, int] | None = None
    kpt_names: tuple[str, ...] | None = None

    @property
    def backbone(self) -> range | None:
        """Layer indices of the backbone, or None if the model does not say."""
        return None if self.backbone_layers is None else range(self.backbone_layers)


@dataclass
class FlatGraph:
    """A traced ultralytics YOLO model: `module` is a torch.fx.GraphModule; each node's facts: fxgraph.info(node).

    `module(x)` returns a tuple named by `output_names`: `pred` (B, 4 + nc [+ nm], anchors) — decoded xywh boxes
    in input pixels, class probabilities and, for a segmenter, mask coefficients — and, for a segmenter, `proto`.
    Its parameters keep ultralytics's names (`model.4.m.0.cv1.conv.weight`), so each one maps back to `model`,
    the ultralytics model that was traced (a private copy, left in eval mode).  Each node's facts are its
    NodeInfo (`fxgraph.info(node)`); the model's are `facts` (ModelFacts).
    """

    module: fx.GraphModule
    model: nn.Module
    imgsz: tuple[int, int]
    task: str
    nc: int
    names: dict[int, str]
    reg_max: int
    stride: tuple[float, ...]
    nm: int = 0
    bn_folded: bool = False
    output_names: tuple[str, ...] = field(default=("pred",))
    facts: ModelFacts | None = None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.module(x)

    @property
    def graph(self) -> fx.Graph:
        return self.module.graph

    def nodes(self, kind: str | None = None) -> Iterator[fx.Node]:
        """The graph's nodes, optionally only those of one op kind."""
        return (n for n in self.module.graph.nodes if kind is None or info(n).kind == kind)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def to(self, *args, **kwargs) -> "FlatGraph":
        """Move or cast the graph module in place (like `nn.Module.to`), and move `model` to the same device so that
        both halves of a pruned pair live together; `model` keeps its dtype (explaining in float64 must not turn the
        checkpoint a pruning saves into float64).  Returns self."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        self.module.to(*args, **kwargs)
        if device is not None:
            self.model.to(device=device)
        return self

    def with_folded_batchnorm(self) -> "FlatGraph":
        """A copy whose graph module has every BatchNorm folded into its conv, as `trace(fold_bn=True)` gives,
        without tracing again (a trace costs seconds; the fold milliseconds).  `model` is shared, not copied."""
        if self.bn_folded:
            return self
        from .passes import fold_batchnorm

        return dataclasses.replace(self, module=fold_batchnorm(copy.deepcopy(self.module)), bn_folded=True)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A random input of the traced size on the graph's device and dtype."""
        return torch.rand(batch, 3, *self.imgsz, device=self.device, dtype=self.dtype)

"""`FlatGraph`: the flat fx graph of one ultralytics detector or segmenter, plus what later stages need of it."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import fx, nn


@dataclass
class FlatGraph:
    """A traced YOLOv8 model: `module` is a torch.fx.GraphModule whose nodes carry `meta` (see fxgraph.ops).

    `module(x)` returns a tuple named by `output_names`: `pred` (B, 4 + nc [+ nm], anchors) — decoded xywh boxes
    in input pixels, class probabilities and, for a segmenter, mask coefficients — and, for a segmenter, `proto`.
    Its parameters keep ultralytics's names (`model.4.m.0.cv1.conv.weight`), so each one maps back to `model`,
    the ultralytics model that was traced (a private copy, left in eval mode).
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

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.module(x)

    @property
    def graph(self) -> fx.Graph:
        return self.module.graph

    def nodes(self, kind: str | None = None) -> Iterator[fx.Node]:
        """The graph's nodes, optionally only those of one op kind."""
        return (n for n in self.module.graph.nodes if kind is None or n.meta.get("kind") == kind)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def to(self, *args, **kwargs) -> "FlatGraph":
        """Move or cast the graph module in place (like `nn.Module.to`); returns self."""
        self.module.to(*args, **kwargs)
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

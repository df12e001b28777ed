"""Everything in pruning that knows ultralytics YOLOv8: which convs are the head's outputs, what "backbone" means,
and how to keep ultralytics modules consistent after their tensors were sliced.

The coupling analysis already refuses channels that reach a reshape or a model output, which covers the head's
output convs; naming them here gives the user a precise reason and keeps them protected even if a future head
wires them differently.
"""

from __future__ import annotations

from typing import Callable, Iterable

from torch import fx, nn

import fxgraph

BACKBONE_LAYERS = range(0, 10)  # YOLOv8 backbone: Conv/C2f stages 0-8 and SPPF 9 (the segmentation design)
SCOPES = ("all", "backbone")


def head_output_convs(model: nn.Module) -> dict[str, str]:
    """Module path -> reason, for the convs whose output channels are the head's outputs."""
    layers = model.model
    index = len(layers) - 1
    head = layers[index]
    prefix = f"model.{index}"
    out: dict[str, str] = {}
    for attr, what in (("cv2", f"box distribution (4*reg_max={4 * head.reg_max})"), ("cv3", f"classes (nc={head.nc})"),
                       ("cv4", f"mask coefficients (nm={getattr(head, 'nm', 0)})")):
        for level, branch in enumerate(getattr(head, attr, None) or []):
            last = len(branch) - 1
            out[f"{prefix}.{attr}.{level}.{last}"] = f"{type(head).__name__} output conv: {what}"
    if getattr(head, "dfl", None) is not None and isinstance(getattr(head.dfl, "conv", None), nn.Conv2d):
        out[f"{prefix}.dfl.conv"] = "DFL (fixed integral weights)"
    proto = getattr(head, "proto", None)
    if proto is not None:
        out[f"{prefix}.proto.cv3.conv"] = f"Proto output (nm={head.nm} prototypes)"
    return out


def protector(graph: fxgraph.FlatGraph) -> Callable[[fx.Node], str | None]:
    """The `protect` callback of `pruning.coupling.analyze` for a YOLO graph."""
    protected = head_output_convs(graph.model)

    def protect(node: fx.Node) -> str | None:
        return protected.get(node.meta.get("module_path"))

    return protect


def scope_layers(scope: str | Iterable[int], graph: fxgraph.FlatGraph) -> frozenset[int] | None:
    """Layer indices a plan may cut: None for 'all', layers 0-9 for 'backbone', or the given indices."""
    if isinstance(scope, str):
        if scope == "all":
            return None
        if scope == "backbone":
            return frozenset(BACKBONE_LAYERS)
        raise ValueError(f"unknown scope {scope!r}; use one of {SCOPES} or a list of layer indices")
    return frozenset(int(i) for i in scope)


def sync_modules(model: nn.Module) -> None:
    """After slicing tensors, make each ultralytics module's own attributes agree with its tensors.

    Conv2d/ConvTranspose2d channel counts and groups, BatchNorm num_features, and the hidden width `c` of
    C2f-like blocks (used by their `forward_split`), so that printing, fusing, exporting and re-running the
    module's own forward code all see the pruned sizes.
    """
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose2d):
            module.in_channels = module.weight.shape[0]
            module.out_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            module.out_channels = module.weight.shape[0]
            if depthwise:
                module.groups = module.out_channels
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            ref = module.weight if module.weight is not None else module.running_mean
            module.num_features = ref.shape[0]
    for module in model.modules():
        cv1 = getattr(module, "cv1", None)
        if isinstance(getattr(module, "c", None), int) and isinstance(getattr(module, "m", None), nn.ModuleList):
            conv = getattr(cv1, "conv", None)
            if isinstance(conv, nn.Conv2d) and conv.out_channels % 2 == 0:
                module.c = conv.out_channels // 2  # C2f / C3k2: cv1 makes 2*c channels, chunked in halves
        proto = getattr(module, "proto", None)
        if isinstance(getattr(module, "npr", None), int) and isinstance(getattr(proto, "cv1", None), nn.Module):
            module.npr = proto.cv1.conv.out_channels  # Segment: width of its Proto

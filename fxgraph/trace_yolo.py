"""Tracing ultralytics YOLOv8 detectors and segmenters: the ultralytics-specific half of fxgraph."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .errors import UnsupportedModelError
from . import nodeinfo, ops
from .graph import FlatGraph, ModelFacts
from .loading import load_ultralytics
from .passes import fold_batchnorm
from .tracer import trace_module

# Head classes we trace.  Subclasses (Pose, OBB, v10Detect, YOLOE...) change the outputs and are refused.
SUPPORTED_HEADS = ("Detect", "Segment", "Segment26")
TASK_OF_HEAD = {"Detect": "detect", "Segment": "segment", "Segment26": "segment"}


def check_supported(model: nn.Module) -> nn.Module:
    """Raise UnsupportedModelError unless `model` is a YOLOv8-style DetectionModel/SegmentationModel; return its head."""
    name = type(model).__name__
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        raise UnsupportedModelError(f"{name} has no ultralytics layer list (model.model); not a YOLO model")
    head = layers[-1]
    head_name = type(head).__name__
    if head_name not in SUPPORTED_HEADS:
        raise UnsupportedModelError(
            f"{name} ends in {head_name} (layer {len(layers) - 1}); only YOLOv8-style detectors and segmenters "
            f"with a {' or '.join(SUPPORTED_HEADS)} head are supported"
        )
    if getattr(head, "end2end", False):
        raise UnsupportedModelError(f"{name}: end-to-end (NMS-free) heads are not supported; layer {len(layers) - 1}")
    return head


def trace(
    model: Any = None,
    imgsz: int | tuple[int, int] = 640,
    *,
    fold_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> FlatGraph:
    """Trace an ultralytics YOLOv8 model (a `YOLO`, a `DetectionModel`/`SegmentationModel`, or a .pt/.yaml path;
    None for the embedded model) into a FlatGraph for images of `imgsz` (int or (h, w), multiples of the stride).

    The caller's model is not modified.  `fold_bn` folds each BatchNorm into its conv; `dtype` casts the copy
    (e.g. torch.float64 for exactness tests); `device` moves the result.
    """
    source = load_ultralytics(model)
    head = check_supported(source)
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    facts = model_facts(source)
    stride = facts.stride
    if h % stride or w % stride or h <= 0 or w <= 0:
        raise UnsupportedModelError(f"imgsz {h}x{w} must be positive multiples of the model stride {stride}")
    private = copy.deepcopy(source).eval()
    if dtype is not None:
        private = private.to(dtype)
    to_export = copy.deepcopy(private)
    export_head = to_export.model[-1]
    export_head.export, export_head.format, export_head.dynamic, export_head.shape = True, None, False, None
    param = next(private.parameters())
    example = torch.rand(2, 3, h, w, dtype=param.dtype)
    gm = trace_module(to_export.cpu(), example.cpu())
    mark_roles(gm, facts)
    if fold_bn:
        gm = fold_batchnorm(gm)
    task = TASK_OF_HEAD[type(head).__name__]
    graph = FlatGraph(
        module=gm,
        model=private,
        imgsz=(h, w),
        task=task,
        nc=int(head.nc),
        names=dict(getattr(source, "names", None) or {i: str(i) for i in range(head.nc)}),
        reg_max=int(head.reg_max),
        stride=tuple(float(s) for s in head.stride),
        nm=int(getattr(head, "nm", 0)),
        bn_folded=fold_bn,
        output_names=("pred", "proto") if task == "segment" else ("pred",),
        facts=facts,
    )
    if device is not None:
        graph.to(device)
    return graph


def model_facts(model: nn.Module) -> ModelFacts:
    """Read the facts later stages need from a supported ultralytics model (see check_supported)."""
    head = check_supported(model)
    layers = model.model
    cfg = getattr(model, "yaml", None)
    backbone = cfg.get("backbone") if isinstance(cfg, dict) else None
    strides = getattr(model, "stride", None)
    if strides is None or not torch.is_tensor(strides) or not strides.numel():
        strides = head.stride
    if not torch.is_tensor(strides) or not strides.numel():
        raise UnsupportedModelError(f"{type(model).__name__} records no stride (model.stride); was it built by ultralytics?")
    return ModelFacts(
        backbone_layers=len(backbone) if backbone is not None else None,
        stride=int(max(float(s) for s in strides)),
        head_layer=len(layers) - 1,
        head_type=type(head).__name__,
        head_outputs=head_outputs(model),
    )


def head_outputs(model: nn.Module) -> dict[str, str]:
    """Module path -> what it outputs, for the modules whose output channels are the head's outputs: the last conv
    of each cv2 (box distribution), cv3 (classes) and cv4 (mask coefficients) branch, the DFL conv and Proto's
    last conv."""
    layers = model.model
    index = len(layers) - 1
    head = layers[index]
    prefix = f"model.{index}"
    out: dict[str, str] = {}
    for attr, what in (("cv2", nodeinfo.BOX), ("cv3", nodeinfo.CLASSES), ("cv4", nodeinfo.MASK_COEFFICIENTS)):
        for level, branch in enumerate(getattr(head, attr, None) or []):
            out[f"{prefix}.{attr}.{level}.{len(branch) - 1}"] = what
    if getattr(head, "dfl", None) is not None and isinstance(getattr(head.dfl, "conv", None), nn.Conv2d):
        out[f"{prefix}.dfl.conv"] = nodeinfo.DFL
    if getattr(head, "proto", None) is not None:
        out[f"{prefix}.proto.cv3.conv"] = nodeinfo.PROTO
    return out


def mark_roles(gm: torch.fx.GraphModule, facts: ModelFacts) -> None:
    """Set role HEAD_OUTPUT (and what it outputs) on the filter ops of the head's output modules."""
    for node in gm.graph.nodes:
        record = nodeinfo.info(node)
        what = facts.head_outputs.get(record.module_path)
        if what is not None and record.kind in ops.FILTER_KINDS:
            nodeinfo.set_info(node, record.replace(role=nodeinfo.HEAD_OUTPUT, output=what))


def reference_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The ultralytics model's own eval-mode outputs in FlatGraph order: (pred,) or (pred, proto)."""
    with torch.no_grad():
        y = model.eval()(x)
    first = y[0]
    if isinstance(first, (tuple, list)):  # segmenter: ((pred, proto), raw)
        return (first[0], first[1])
    return (first,)

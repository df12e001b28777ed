"""Tracing ultralytics YOLO models (YOLOv5u, v8, v9, v10, 11, 12, 26 on both head branches; detect, segment, pose,
OBB and classify heads): the ultralytics-specific half of fxgraph."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ArgumentError, UnsupportedModelError
from . import nodeinfo, ops
from .graph import FlatGraph, ModelFacts
from .loading import load_ultralytics
from .passes import fold_batchnorm
from .tracer import trace_module

# Head classes we trace, and the task each computes.  Other heads (YOLOE, World, RT-DETR...) are refused.
TASK_OF_HEAD = {
    "Detect": "detect", "v10Detect": "detect",
    "Segment": "segment", "Segment26": "segment",
    "Pose": "pose", "Pose26": "pose",
    "OBB": "obb", "OBB26": "obb",
    "Classify": "classify",
}
SUPPORTED_HEADS = tuple(TASK_OF_HEAD)
BRANCHES = ("one2many", "one2one")
# Heads whose refusal is known in detail: what in them we cannot explain exactly.
_REFUSED = {
    "RTDETRDecoder": "its deformable attention samples features with aten.grid_sampler_2d (F.grid_sample) at "
                     "positions the network predicts, and it selects queries by top-k; fxgraph has no exact "
                     "relevance rule for grid_sample",
}


def check_supported(model: nn.Module) -> nn.Module:
    """Raise UnsupportedModelError unless `model` is an ultralytics model with a head of SUPPORTED_HEADS; return it."""
    name = type(model).__name__
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        raise UnsupportedModelError(f"{name} has no ultralytics layer list (model.model); not a YOLO model")
    head = layers[-1]
    head_name = type(head).__name__
    if head_name in _REFUSED:
        raise UnsupportedModelError(f"{name} ends in {head_name} (layer {len(layers) - 1}), which is not supported: "
                                    f"{_REFUSED[head_name]}. Use a YOLO detector (e.g. yolo11n.pt) instead")
    if head_name not in SUPPORTED_HEADS:
        raise UnsupportedModelError(
            f"{name} ends in {head_name} (layer {len(layers) - 1}); supported heads are {', '.join(SUPPORTED_HEADS)} "
            "(ultralytics detect, segment, pose, OBB and classify models)"
        )
    return head


def task_of(head: nn.Module) -> str:
    """The ultralytics task of a supported head."""
    return TASK_OF_HEAD[type(head).__name__]


def default_branch(head: nn.Module) -> str | None:
    """The head branch ultralytics's predict uses: "one2one" for an end-to-end head, "one2many" for a head that also
    has a one2one branch but runs NMS, None for a head without one2one branch."""
    if getattr(head, "one2one_cv2", None) is None:  # also every head without one2one branch (Classify)
        return None
    return "one2one" if head.end2end else "one2many"


def check_branch(head: nn.Module, branch: str | None) -> str | None:
    """Validate the `branch` asked for against the head; return the branch the graph will compute."""
    has = default_branch(head)
    if branch is None:
        return has
    if branch not in BRANCHES:
        raise UnsupportedModelError(f"branch={branch!r}: choose one of {BRANCHES} (or None for the model's default)")
    if has is None and branch == "one2one":
        raise UnsupportedModelError(f"{type(head).__name__} head has no one2one (end-to-end) branch; use branch=None")
    return branch if has is not None else None


def family_of(model: nn.Module) -> str | None:
    """The model family from its yaml file name ("yolo11n-seg.yaml" -> "yolo11"), None when the model says none."""
    cfg = getattr(model, "yaml", None)
    stem = Path(str(cfg.get("yaml_file", ""))).stem if isinstance(cfg, dict) else ""
    match = re.match(r"(yolov?\d+)", stem)
    return match.group(1) if match else None


def trace(
    model: Any = None,
    imgsz: int | tuple[int, int] = 640,
    *,
    fold_bn: bool = False,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    branch: str | None = None,
) -> FlatGraph:
    """Trace an ultralytics YOLO model (v5u, v8, v9, 11, 26) (a `YOLO`, a `DetectionModel`/`SegmentationModel`, or a .pt/.yaml path;
    None for the embedded model) into a FlatGraph for images of `imgsz` (int or (h, w), multiples of the stride).

    The caller's model is not modified.  `fold_bn` folds each BatchNorm into its conv; `dtype` casts the copy
    (e.g. torch.float64 for exactness tests); `device` moves the result.  `branch` ("one2many" | "one2one") picks
    the head branch of a head with an end-to-end branch (YOLO26); None is what ultralytics's predict uses.  The
    one2one graph outputs the pre-selection tensor (B, 4 + nc [+ nm], anchors) with xyxy boxes: ultralytics's
    top-k selection stays outside the graph, as NMS does for one2many.
    """
    h, w = check_imgsz(imgsz)
    source = load_ultralytics(model)
    head = check_supported(source)
    branch = check_branch(head, branch)
    facts = model_facts(source, branch)
    stride = int(facts.stride)
    if h % stride or w % stride:
        up = [-(-v // stride) * stride for v in (h, w)]  # rounded up, as ultralytics's check_imgsz does
        near = up[0] if up[0] == up[1] and h == w else tuple(up)
        raise ArgumentError(f"imgsz {imgsz!r}: {h}x{w} is not a multiple of the model stride {stride}; use a "
                            f"multiple of {stride} such as {near}")
    private = copy.deepcopy(source).eval()
    if dtype is not None:
        private = private.to(dtype)
    to_export = copy.deepcopy(private)
    export_head = to_export.model[-1]
    export_head.export, export_head.format, export_head.dynamic, export_head.shape = True, None, False, None
    if branch is not None:
        export_head.end2end = branch == "one2one"
        # (B, A, 4 + nc) -> back to (B, 4 + nc, A): the top-k selection stays outside the graph.
        export_head.postprocess = lambda y: y.permute(0, 2, 1)
    param = next(private.parameters())
    example = torch.rand(2, 3, h, w, dtype=param.dtype)
    gm = trace_module(to_export.cpu(), example.cpu())
    mark_roles(gm, facts)
    if fold_bn:
        gm = fold_batchnorm(gm)
    task = task_of(head)
    nc = num_classes(head)
    graph = FlatGraph(
        module=gm,
        model=private,
        imgsz=(h, w),
        task=task,
        nc=nc,
        names=dict(getattr(source, "names", None) or {i: str(i) for i in range(nc)}),
        reg_max=int(getattr(head, "reg_max", 0)),
        stride=tuple(float(s) for s in getattr(head, "stride", source.stride)),
        nm=int(getattr(head, "nm", 0)),
        bn_folded=fold_bn,
        output_names=("pred", "proto") if task == "segment" else ("pred",),
        facts=facts,
    )
    if device is not None:
        graph.to(device)
    return graph


def num_classes(head: nn.Module) -> int:
    """The number of classes a supported head predicts (a Classify head: its linear layer's outputs)."""
    if type(head).__name__ == "Classify":
        return int(head.linear.out_features)
    return int(head.nc)


def check_imgsz(imgsz: Any) -> tuple[int, int]:
    """(h, w) from an int or an (h, w) / (n,) sequence of positive ints, as ultralytics takes `imgsz`; ArgumentError
    naming the value otherwise (a float, a string, zero...), before any model is loaded."""
    values = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz]
    if not 1 <= len(values) <= 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                        for v in values):
        raise ArgumentError(f"imgsz must be a positive int or an (h, w) pair of positive ints (multiples of the "
                            f"model stride, e.g. 640 or (480, 640)); got {imgsz!r} ({type(imgsz).__name__})")
    return (int(values[0]), int(values[-1]))


def model_facts(model: nn.Module, branch: str | None = None) -> ModelFacts:
    """Read the facts later stages need from a supported ultralytics model (see check_supported); `branch` as
    checked by check_branch."""
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
        head_outputs=head_outputs(model, branch),
        family=family_of(model),
        branch=branch,
        box_format=box_format(head, branch),
        pred_layout=PRED_LAYOUTS[task_of(head)],
        task=task_of(head),
        kpt_shape=tuple(int(v) for v in head.kpt_shape) if task_of(head) == "pose" else None,
        kpt_names=keypoint_names(model) if task_of(head) == "pose" else None,
    )


def keypoint_names(model: nn.Module) -> tuple[str, ...] | None:
    """The keypoint names a trained pose model records (`model.kpt_names`, per class as ultralytics's trainer sets it,
    or a plain list); those of the first class when every class names the same ones, None when it records none."""
    names = getattr(model, "kpt_names", None)
    if isinstance(names, dict):
        lists = [tuple(str(n) for n in v) for v in names.values()]
        return lists[0] if lists and all(v == lists[0] for v in lists) else None
    if isinstance(names, (list, tuple)) and names:
        return tuple(str(n) for n in names)
    return None


# The prediction tensor of each task: boxes, class probabilities, then what the task adds per candidate.
PRED_LAYOUTS = {"detect": "B,4+nc,A", "segment": "B,4+nc+nm,A", "pose": "B,4+nc+nk,A", "obb": "B,4+nc+1,A",
                "classify": "B,nc"}


def box_format(head: nn.Module, branch: str | None) -> str | None:
    """How `pred` holds boxes: "xywhr" (OBB, both branches: rotated centre boxes, the angle last), "xyxy" (the
    end-to-end branch, or a head asked for corners), "xywh", or None (a classifier)."""
    task = task_of(head)
    if task == "classify":
        return None
    if task == "obb":
        return "xywhr"
    return "xyxy" if branch == "one2one" or getattr(head, "xyxy", False) else "xywh"


def head_outputs(model: nn.Module, branch: str | None = None) -> dict[str, str]:
    """Module path -> what it outputs, for the modules whose output channels are the head's outputs: the last conv
    of each cv2 (box distribution), cv3 (classes) and cv4 (mask coefficients) branch, the DFL conv and Proto's
    last conv.  On the one2one branch these are the one2one_ copies of cv2/cv3/cv4."""
    layers = model.model
    index = len(layers) - 1
    head = layers[index]
    prefix = f"model.{index}"
    out: dict[str, str] = {}
    if task_of(head) == "classify":
        return {f"{prefix}.linear": nodeinfo.CLASSES}
    fourth = {"segment": nodeinfo.MASK_COEFFICIENTS, "pose": nodeinfo.KEYPOINTS, "obb": nodeinfo.ANGLE}.get(task_of(head))
    branches = [("cv2", nodeinfo.BOX), ("cv3", nodeinfo.CLASSES), ("cv4", fourth), ("cv4_kpts", nodeinfo.KEYPOINTS)]
    for attr, what in branches:
        name = f"one2one_{attr}" if branch == "one2one" else attr
        for level, convs in enumerate(getattr(head, name, None) or []):
            if isinstance(convs, nn.Conv2d):  # Pose26's cv4_kpts: one conv per level
                out[f"{prefix}.{name}.{level}"] = what
            elif isinstance(convs[-1], nn.Conv2d):  # Pose26's cv4 ends in a Conv block: features, not outputs
                out[f"{prefix}.{name}.{level}.{len(convs) - 1}"] = what
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


def reference_outputs(model: nn.Module, x: torch.Tensor, branch: str | None = None) -> tuple[torch.Tensor, ...]:
    """The ultralytics model's own eval-mode outputs in FlatGraph order: (pred,) or (pred, proto).  For
    branch="one2one", pred is the head's own decoding of its one2one predictions before top-k selection."""
    head = check_supported(model)
    branch = check_branch(head, branch)
    if branch is not None and branch != default_branch(head):
        model = copy.deepcopy(model)
        head = model.model[-1]
        head.end2end = branch == "one2one"
    with torch.no_grad():
        y = model.eval()(x)
        if branch == "one2one":
            raw = y[1]["one2one"]
            pred = head._inference(raw)
            return (pred, y[0][1]) if isinstance(y[0], (tuple, list)) else (pred,)
    first = y[0]
    if isinstance(first, (tuple, list)):  # segmenter: ((pred, proto), raw)
        return (first[0], first[1])
    return (first,)

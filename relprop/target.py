"""What is explained: a target chosen from the model's outputs, as a function of those outputs.

The only ultralytics-specific part of the explaining stack besides letterboxing.  For a detector `pred` is
(4 + nc + extra, A): the decoded box of every candidate (every grid cell of every stride) in network-input pixels, the
class probabilities, then what the task adds (mask coefficients, keypoints x, y[, visibility], or the OBB angle).  A
target is a weight map W of the same shape, and the explained scalar is

    f(x) = Σ_{c, a} W[c, a] · pred[c, a]

with W = 1 on the explained rows of the matched candidates and 0 elsewhere:

* ``target="class"``:     row 4 + k (the probability of class k) of every matched candidate;
* ``target="box"``:       rows 0..3 (x, y, w, h or x1, y1, x2, y2 in input pixels; OBB: and the angle row);
* ``target="all"``:       both;
* ``target="keypoints"``: every keypoint row (pose), or, with ``keypoint=k``, keypoint k's x, y (and visibility);
* ``target="mask"``:      the instance mask logits summed inside the box (segment): Σ_a Σ_p coef(a)·proto(p) over the
                          matched candidates a and the proto pixels p inside the box, a product of two outputs, whose
                          exact Shapley split Δ(u·v) = ½(v + v0)·Δu + ½(u + u0)·Δv is `functions.ProductFn`.

A classifier's `pred` is (nc,) class probabilities: W is one-hot on the explained class.  Matching runs on the
device with fixed-shape masks (no `nonzero`, no Python ints), so the explain call syncs with the host once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import BoxError, NoMatchError, OptionsError

TARGETS = ("class", "box", "all", "keypoints", "mask")


@dataclass(frozen=True)
class Layout:
    """Where a task's values sit in one example of `pred`, read from the graph's ModelFacts once."""

    task: str = "detect"
    nc: int = 80
    box_format: str | None = "xywh"
    kpt_shape: tuple[int, int] | None = None
    nm: int = 0
    any_class: bool = False  # end-to-end branch: a candidate may be explained for a class that is not its best
    kpt_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, graph: Any) -> "Layout":
        """The layout of a FlatGraph (a graph without facts: a detector with xywh boxes)."""
        facts = graph.facts
        if facts is None:
            return cls(nc=graph.nc, nm=graph.nm, task=graph.task)
        return cls(task=facts.task, nc=graph.nc, box_format=facts.box_format, kpt_shape=facts.kpt_shape,
                   nm=graph.nm, any_class=facts.branch == "one2one", kpt_names=tuple(facts.kpt_names or ()))

    @property
    def rotated(self) -> bool:
        return self.box_format == "xywhr"

    def check(self, kind: str, keypoint: int | str | None, cls: Any) -> int | None:
        """OptionsError unless the target kind, keypoint and class fit this model; the keypoint as an index."""
        if kind == "keypoints" and self.task != "pose":
            raise OptionsError(f"target='keypoints' needs a pose model; this is a {self.task} model (choose "
                               f"target='class' or 'box')")
        if kind == "mask" and self.task != "segment":
            raise OptionsError(f"target='mask' needs a segmentation model with instance masks; this is a {self.task} "
                               "model (choose target='class' or 'box')")
        if self.task == "classify" and kind != "class":
            raise OptionsError(f"a classifier explains target='class' only; got target={kind!r}")
        for c in (cls if isinstance(cls, tuple) else (cls,)):
            if c is not None and not 0 <= int(c) < self.nc:  # a box's class (BoxError, as ever) or the classifier's
                error = OptionsError if self.task == "classify" else BoxError
                raise error(f"cls={c}: class {c} is not a class of this model (0..{self.nc - 1})")
        if keypoint is None:
            return None
        if kind != "keypoints":
            raise OptionsError(f"keypoint={keypoint!r} is given with target={kind!r}; use target='keypoints'")
        nk = self.kpt_shape[0]
        if isinstance(keypoint, str):
            if keypoint not in self.kpt_names:
                known = f"its keypoints are {list(self.kpt_names)}" if self.kpt_names else "it names no keypoints"
                raise OptionsError(f"keypoint {keypoint!r} is not a keypoint name of this model ({known}); give a "
                                   f"name it has or an index 0..{nk - 1}")
            return self.kpt_names.index(keypoint)
        if isinstance(keypoint, bool) or not isinstance(keypoint, (int, np.integer)) or not 0 <= keypoint < nk:
            raise OptionsError(f"keypoint={keypoint!r} is out of range: this model has {nk} keypoints (0..{nk - 1})")
        return int(keypoint)

    def task_rows(self) -> np.ndarray | None:
        """The rows of one candidate of `pred` (4 + nc + extra, A) that the task adds after the class scores and
        that are read as values: a pose model's nk·ndim keypoint values, an OBB model's angle; None for detect,
        segment (its mask is a product of coefficients and prototypes, not a row) and classify."""
        if self.task == "pose" and self.kpt_shape:
            return np.arange(4 + self.nc, 4 + self.nc + self.kpt_shape[0] * self.kpt_shape[1])
        if self.rotated:
            return np.array([4 + self.nc])
        return None


@dataclass
class Target:
    """One thing to explain: the box (input pixels; xyxy, or xywhr for OBB; None for a classifier), and, on the
    device, the explained class, the matched candidates as a mask over the A anchors with each one's IoU, the best
    eligible IoU (−1 when no candidate is eligible) and the confidence."""

    box: np.ndarray | None
    cls: torch.Tensor        # 0-dim long
    matched: torch.Tensor    # (A,) bool
    ious: torch.Tensor       # (A,)
    best: torch.Tensor       # 0-dim
    conf: torch.Tensor       # 0-dim
    kind: str = "class"
    keypoint: int | None = None
    shown: np.ndarray | None = None  # the box as the user gave it (original pixels), for messages
    # read back by `resolve`: the matched candidates by decreasing IoU, their IoUs, the confidence
    candidates: np.ndarray | None = None
    host_ious: np.ndarray | None = None
    host_conf: float = math.nan

    def resolve(self, iou: float, cls: int | None = None, values: np.ndarray | None = None) -> "Target":
        """This target on the host: `cls` an int, `candidates`, `host_ious`, `host_conf`; NoMatchError if nothing
        matched.  `values` is its row already read back with everything else (see `relprop.explainer`; its first
        three entries are cls, conf, best IoU, its last 2A the matched mask and the IoUs); else it is read now."""
        if values is None:
            values = torch.cat([torch.stack([self.cls.double() if torch.is_tensor(self.cls) else
                                             self.conf.new_tensor(float(self.cls), dtype=torch.float64),
                                             self.conf.double(), self.best.double()]),
                                self.matched.double(), self.ious.double()]).cpu().numpy()
        n = self.matched.numel()
        matched, ious = values[len(values) - 2 * n:len(values) - n] > 0.5, values[len(values) - n:]
        if self.box is not None and not matched.any():
            raise self.no_match_error(float(values[2]), iou, cls)
        order = np.flatnonzero(matched)[np.argsort(-ious[matched], kind="stable")] if self.box is not None else \
            np.zeros(0, dtype=np.int64)
        self.cls, self.host_conf = int(values[0]), float(values[1])
        self.candidates, self.host_ious = order.astype(np.int64), ious[order]
        return self

    def weights(self, layout: Layout, rows: int, anchors: int | None, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
        """The weight map W (rows, anchors) of the explained functional f = Σ W·pred ((nc,) for a classifier)."""
        r = torch.arange(rows, device=device)
        if anchors is None:  # classifier
            return (r == self.cls).to(dtype)
        sel = torch.zeros(rows, dtype=torch.bool, device=device)
        if self.kind in ("class", "all"):
            sel = sel | (r == 4 + self.cls)
        if self.kind in ("box", "all"):
            sel = sel | (r < 4)
            if layout.rotated:  # a rotated box's angle (its task row)
                sel = sel | (r == int(layout.task_rows()[0]))
        if self.kind == "keypoints":
            values = layout.task_rows()
            if self.keypoint is not None:  # one keypoint's ndim values
                ndim = layout.kpt_shape[1]
                values = values[self.keypoint * ndim:(self.keypoint + 1) * ndim]
            sel = sel | ((r >= int(values[0])) & (r <= int(values[-1])))
        return sel.to(dtype)[:, None] * self.matched.to(dtype)[None, :]

    def region(self, proto_hw: tuple[int, int], input_hw: tuple[int, int], dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
        """The proto pixels inside the box, (Hp, Wp) of 0/1, as ultralytics's `crop_mask` chooses them."""
        (hp, wp), (h, w) = proto_hw, input_hw
        x1, y1, x2, y2 = (float(v) for v in self.box[:4])
        cols = torch.arange(wp, device=device, dtype=dtype)
        rows = torch.arange(hp, device=device, dtype=dtype)
        inside_x = (cols >= x1 * wp / w) & (cols < x2 * wp / w)
        inside_y = (rows >= y1 * hp / h) & (rows < y2 * hp / h)
        return (inside_y[:, None] & inside_x[None, :]).to(dtype)

    def no_match_error(self, best: float, iou: float, cls: int | None) -> NoMatchError:
        """The NoMatchError of this target, given its best IoU (read back from the device)."""
        what = "candidate" if cls is None else f"candidate predicting class {cls}"
        where = (f"{tuple(np.round(self.box, 1).tolist())} (network-input pixels)" if self.shown is None
                 else f"{tuple(np.round(self.shown, 1).tolist())} (original pixels)")
        best_text = "none" if best < 0 else f"{best:.3f}"
        return NoMatchError(
            f"no {what} overlaps box {where} with IoU >= {iou}; best IoU found: {best_text}. Lower `iou`, check the "
            "box is xyxy (xywhr or 4 corners for OBB) in original-image pixels, or drop `cls`.",
            best_iou=best if best >= 0 else float("nan"),
        )


def parse_box(box: Sequence[float] | str, rotated: bool = False) -> np.ndarray:
    """(x1, y1, x2, y2) as four finite numbers with x2 > x1 and y2 > y1, else BoxError.  `rotated` (an OBB model):
    (x, y, w, h, r) with w, h > 0 (radians), or 4 corner points (8 numbers, or 4 (x, y) pairs) -> xywhr."""
    if isinstance(box, str):
        parts = box.replace(" ", "").split(",")
        try:
            box = [float(p) for p in parts]
        except ValueError:
            what = "five numbers x,y,w,h,r or eight corner coordinates" if rotated else "four numbers x1,y1,x2,y2"
            raise BoxError(f"box '{box}' is not {what} (comma-separated)") from None
    try:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BoxError(f"box {box!r} is not {'an xywhr box' if rotated else 'four numbers x1, y1, x2, y2'}") from None
    if rotated:
        return _parse_rotated(b, box)
    if b.size != 4 or not np.isfinite(b).all():
        raise BoxError(f"box {box!r} must be four finite numbers x1, y1, x2, y2 (original image pixels)")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise BoxError(f"box {tuple(b.tolist())} is degenerate: need x2 > x1 and y2 > y1 (xyxy, original pixels)")
    return b


def _parse_rotated(b: np.ndarray, given: Any) -> np.ndarray:
    if b.size not in (5, 8) or not np.isfinite(b).all():
        raise BoxError(f"an OBB box must be five finite numbers x, y, w, h, r (radians) or 4 corner points (8 "
                       f"numbers), original image pixels; got {b.size} value(s): {given!r}")
    if b.size == 8:
        from ultralytics.utils.ops import xyxyxyxy2xywhr

        b = np.asarray(xyxyxyxy2xywhr(b.reshape(1, 8).astype(np.float32)), dtype=np.float64).reshape(5)
    if not (b[2] > 0 and b[3] > 0):
        raise BoxError(f"OBB box {tuple(np.round(b, 3).tolist())} has zero width or height (xywhr): give a box "
                       "with w > 0 and h > 0 (or 4 corners spanning an area)")
    return b


def rotated_corners(xywhr: np.ndarray) -> np.ndarray:
    """The 4 corners (4, 2) of an xywhr box."""
    x, y, w, h, r = (float(v) for v in xywhr[:5])
    c, s = math.cos(r), math.sin(r)
    half = np.array([[w / 2, h / 2], [-w / 2, h / 2], [-w / 2, -h / 2], [w / 2, -h / 2]])
    return half @ np.array([[c, s], [-s, c]]) + np.array([x, y])


def check_inside(box: np.ndarray, shape: tuple[int, int]) -> None:
    """BoxError unless the box (xyxy, or xywhr: its corners' extent) overlaps the image of `shape` (H, W)."""
    h, w = shape
    if box.size == 5:
        pts = rotated_corners(box)
        extent = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
    else:
        extent = box
    if extent[0] >= w or extent[1] >= h or extent[2] <= 0 or extent[3] <= 0:
        raise BoxError(f"box {tuple(np.round(box, 2).tolist())} lies outside the {w}x{h} image (original pixels)")


def xywh_to_xyxy(xywh: torch.Tensor) -> torch.Tensor:
    """(A, 4) centre boxes → (A, 4) corner boxes."""
    x, y, w, h = xywh.unbind(-1)
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], -1)


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one xyxy box (4,) with each of `boxes` (A, 4)."""
    lt = torch.maximum(box[:2], boxes[:, :2])
    rb = torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    return inter / (area + areas - inter).clamp(min=1e-12)


def candidate_ious(pred: torch.Tensor, box: np.ndarray, layout: Layout) -> torch.Tensor:
    """(A,) overlap of the box (input pixels) with each candidate of one `pred`: IoU, or for OBB ultralytics's
    probabilistic IoU (`ultralytics.utils.metrics.probiou`) of the xywhr boxes."""
    pred = pred.detach().double()
    query = torch.as_tensor(box, dtype=pred.dtype, device=pred.device)
    if layout.rotated:
        from ultralytics.utils.metrics import probiou

        cand = torch.cat([pred[:4], pred[-1:]]).T  # (A, 5) xywhr
        return probiou(query.expand_as(cand), cand).reshape(-1)
    boxes = pred[:4].T if layout.box_format == "xyxy" else xywh_to_xyxy(pred[:4].T)
    return box_iou(query, boxes)


def match(pred: torch.Tensor, box: np.ndarray, layout: Layout, *, iou: float = 0.7, cls: int | None = None,
          kind: str = "class", keypoint: int | None = None, shown: np.ndarray | None = None) -> Target:
    """Match a box in input pixels (xyxy; xywhr for OBB) to the candidates of one `pred` (4 + nc + extra, A), on the
    device (nothing is read back: see `Target`).

    Matched: IoU ≥ `iou` with the candidate's decoded box and, when `cls` is given, the candidate's most probable
    class is `cls` (any candidate on an end-to-end branch, whose top-k selects (candidate, class) pairs).  The explained
    class is `cls`, else the class of the most probable matched (candidate, class).  Whether anything matched is read
    with the results (`Target.no_match_error`).
    """
    if kind not in TARGETS:
        raise BoxError(f"target must be one of {TARGETS}; got '{kind}'")
    if not 0.0 < iou <= 1.0:
        raise BoxError(f"iou must be in (0, 1]; got {iou}")
    if cls is not None and not 0 <= int(cls) < layout.nc:
        raise BoxError(f"class {cls} is not a class of this model (0..{layout.nc - 1})")
    ious = candidate_ious(pred, box, layout)
    probs = pred.detach()[4:4 + layout.nc].to(ious.dtype)
    if cls is None or layout.any_class:
        eligible = ious
    else:
        eligible = torch.where(probs.argmax(0) == int(cls), ious, torch.full_like(ious, -1.0))
    matched = eligible >= iou
    low = torch.full_like(probs, -math.inf)
    if cls is None:
        chosen = torch.where(matched[None], probs, low).amax(1).argmax()
    else:
        chosen = torch.tensor(int(cls), device=pred.device)
    conf = torch.where(matched, probs.index_select(0, chosen.reshape(1))[0], low[0]).amax()
    return Target(box=np.asarray(box, dtype=np.float64), cls=chosen, matched=matched, ious=ious,
                  best=eligible.amax(), conf=conf, kind=kind, keypoint=keypoint, shown=shown)


def class_target(pred: torch.Tensor, cls: int | None) -> Target:
    """The target of a classifier's `pred` (nc,): class `cls`, else the most probable class (top-1)."""
    chosen = pred.detach().argmax() if cls is None else torch.tensor(int(cls), device=pred.device)
    one = torch.ones(1, dtype=torch.bool, device=pred.device)
    conf = pred.detach().index_select(0, chosen.reshape(1))[0].double()
    return Target(box=None, cls=chosen, matched=one, ious=one.double(), best=conf.new_ones(()), conf=conf)


class TargetSet:
    """D targets as one function of the outputs, for `Pass.backward`: Σ W_d·pred, plus, for mask targets, the
    product u_d·v_d of the matched candidates' summed coefficients u_d = Σ_a M_d[a]·coef[:, a] and the proto summed
    inside the box v_d = Σ_p R_d[p]·proto[:, p], split exactly by `functions.ProductFn` against the reference."""

    def __init__(self, weights: torch.Tensor, coefs: torch.Tensor | None = None, regions: torch.Tensor | None = None,
                 first_coef: int = 0):
        self.weights, self.coefs, self.regions, self.first_coef = weights, coefs, regions, first_coef

    @classmethod
    def build(cls, targets: list[Target], layout: Layout, outputs: tuple[torch.Tensor, ...],
              input_hw: tuple[int, int]) -> "TargetSet":
        pred = outputs[0]
        dtype, device = pred.dtype, pred.device
        anchors = pred.shape[2] if pred.dim() == 3 else None
        weights = torch.stack([t.weights(layout, pred.shape[1], anchors, dtype, device) for t in targets])
        masks = [t.kind == "mask" for t in targets]
        if not any(masks):
            return cls(weights)
        proto_hw = tuple(outputs[1].shape[-2:])
        zero_a, zero_r = torch.zeros(anchors, dtype=dtype, device=device), torch.zeros(proto_hw, dtype=dtype, device=device)
        coefs = torch.stack([t.matched.to(dtype) if m else zero_a for t, m in zip(targets, masks)])
        regions = torch.stack([t.region(proto_hw, input_hw, dtype, device) if m else zero_r
                               for t, m in zip(targets, masks)])
        return cls(weights, coefs, regions, 4 + layout.nc)

    def function(self, reference: tuple[torch.Tensor, ...]) -> torch.Tensor | Callable:
        """What `Pass.backward` takes: the weight tensor, or for mask targets a function of the outputs that splits
        each product against `reference` (the pass's reference outputs)."""
        if self.coefs is None:
            return self.weights
        from .rules.products import ProductFn

        u0, v0 = self._factors(reference)

        def targets(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
            linear = outputs[0].flatten(1) @ self.weights.flatten(1).T
            u, v = self._factors(outputs)
            return linear + ProductFn.apply(u, v, u0, v0).sum(-1)

        return targets

    def _factors(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        pred, proto = outputs[0], outputs[1]
        coef = pred[:, self.first_coef:self.first_coef + proto.shape[1]]  # (B, nm, A)
        u = torch.einsum("bja,da->bdj", coef, self.coefs)
        v = torch.einsum("bjhw,dhw->bdj", proto, self.regions)
        return u, v


@dataclass
class Detection:
    """One detection after NMS: xyxy box in input pixels, confidence, class, index of its raw candidate."""

    box: np.ndarray
    conf: float
    cls: int
    index: int


def detections(pred: torch.Tensor, nc: int, *, conf: float = 0.25, iou: float = 0.7,
               max_det: int = 300, rotated: bool = False) -> list[Detection]:
    """NMS of one `pred` (4 + nc + extra, A) exactly as ultralytics's predictor does it (class-aware, one label);
    `rotated` (OBB): ultralytics's rotated NMS (probiou), boxes xywhr."""
    from ultralytics.utils.nms import non_max_suppression

    out, keep = non_max_suppression(pred.detach().unsqueeze(0), conf, iou, max_det=max_det, nc=nc,
                                    return_idxs=True, rotated=rotated)
    rows, idx = out[0].cpu().numpy(), keep[0].cpu().numpy().reshape(-1)
    cols = [0, 1, 2, 3, 6] if rotated else [0, 1, 2, 3]  # rotated rows: x, y, w, h, conf, cls, angle
    return [Detection(r[cols].astype(np.float64), float(r[4]), int(r[5]), int(i)) for r, i in zip(rows, idx)]


def topk_detections(pred: torch.Tensor, nc: int, *, conf: float = 0.25, max_det: int = 300) -> list[Detection]:
    """The detections of an end-to-end (one2one) `pred` (4 + nc [+ nm], A) with xyxy boxes, selected as ultralytics's
    `Detect.postprocess` does (top-k anchors by best score, then top-k (anchor, class) pairs), above `conf`."""
    scores = pred.detach()[4:4 + nc].T  # (A, nc)
    k = min(max_det, scores.shape[0])
    anchors = scores.max(-1).values.topk(k).indices
    top, flat = scores[anchors].flatten().topk(k)
    rows = anchors[flat // nc]
    classes = flat % nc
    boxes = pred.detach()[:4].T[rows].double().cpu().numpy()
    return [Detection(b, float(s), int(c), int(i))
            for b, s, c, i in zip(boxes, top.tolist(), classes.tolist(), rows.tolist()) if s > conf]

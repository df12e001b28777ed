"""What is explained: a box matched to the detector's raw candidates, as a linear functional of the output `pred`.

The only ultralytics-specific part of the explaining stack besides letterboxing.  `pred` is (4 + nc [+ nm], A): the
decoded xywh box of every candidate (every grid cell of every stride) in network-input pixels, then class
probabilities, then mask coefficients.  A target is a weight map W of the same shape, and the explained scalar is

    f(x) = Σ_{c, a} W[c, a] · pred[c, a]

with W = 1 on the explained rows of the matched candidates and 0 elsewhere:

* ``target="class"``: row 4 + k (the probability of class k) of every matched candidate;
* ``target="box"``:   rows 0..3 (x, y, w, h in input pixels) of every matched candidate;
* ``target="all"``:   both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import BoxError, NoMatchError

TARGETS = ("class", "box", "all")


@dataclass
class Target:
    """One box to explain: its class, the matched candidates (indices into the A anchors) and their IoUs."""

    box: np.ndarray          # xyxy in network-input pixels
    cls: int
    candidates: np.ndarray   # int64 (M,)
    ious: np.ndarray         # float (M,)
    kind: str = "class"

    def weights(self, rows: int, anchors: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The weight map W (rows, anchors) of the explained functional f = Σ W·pred."""
        w = torch.zeros(rows, anchors, dtype=dtype, device=device)
        idx = torch.as_tensor(self.candidates, device=device, dtype=torch.long)
        if self.kind in ("class", "all"):
            w[4 + self.cls, idx] = 1
        if self.kind in ("box", "all"):
            w[:4, idx] = 1
        return w


def parse_box(box: Sequence[float] | str) -> np.ndarray:
    """(x1, y1, x2, y2) as four finite numbers with x2 > x1 and y2 > y1, else BoxError."""
    if isinstance(box, str):
        parts = box.replace(" ", "").split(",")
        try:
            box = [float(p) for p in parts]
        except ValueError:
            raise BoxError(f"box '{box}' is not four comma-separated numbers x1,y1,x2,y2") from None
    try:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise BoxError(f"box {box!r} is not four numbers x1, y1, x2, y2") from None
    if b.size != 4 or not np.isfinite(b).all():
        raise BoxError(f"box {box!r} must be four finite numbers x1, y1, x2, y2 (original image pixels)")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise BoxError(f"box {tuple(b.tolist())} is degenerate: need x2 > x1 and y2 > y1 (xyxy, original pixels)")
    return b


def check_inside(box: np.ndarray, shape: tuple[int, int]) -> None:
    """BoxError unless the box overlaps the image of `shape` (H, W)."""
    h, w = shape
    if box[0] >= w or box[1] >= h or box[2] <= 0 or box[3] <= 0:
        raise BoxError(f"box {tuple(np.round(box, 2).tolist())} lies outside the {w}x{h} image (xyxy, original pixels)")


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


def match(pred: torch.Tensor, box: np.ndarray, nc: int, *, iou: float = 0.7, cls: int | None = None,
          kind: str = "class", shown: np.ndarray | None = None, box_format: str = "xywh",
          any_class: bool = False) -> Target:
    """Match an xyxy box in input pixels to the candidates of one `pred` (4 + nc [+ nm], A).

    Matched: IoU ≥ `iou` with the candidate's decoded box and, when `cls` is given, the candidate's most probable
    class is `cls`.  The explained class is `cls`, else the class of the most probable matched (candidate, class).
    NoMatchError (reporting the best IoU, and the box as `shown`, e.g. in original pixels) if none qualifies.
    `box_format` is how `pred` holds boxes ("xywh", or "xyxy" on an end-to-end branch: the graph's ModelFacts).
    `any_class`: a candidate may predict `cls` without it being its most probable class (the end-to-end branch's
    top-k selects (candidate, class) pairs).
    """
    if kind not in TARGETS:
        raise BoxError(f"target must be one of {TARGETS}; got '{kind}'")
    if not 0.0 < iou <= 1.0:
        raise BoxError(f"iou must be in (0, 1]; got {iou}")
    if cls is not None and not 0 <= int(cls) < nc:
        raise BoxError(f"class {cls} is not a class of this model (0..{nc - 1})")
    pred = pred.detach().double()
    boxes = pred[:4].T if box_format == "xyxy" else xywh_to_xyxy(pred[:4].T)
    ious = box_iou(torch.as_tensor(box, dtype=pred.dtype, device=pred.device), boxes)
    probs = pred[4:4 + nc]
    allowed = torch.ones_like(ious, dtype=torch.bool) if cls is None or any_class else probs.argmax(0) == int(cls)
    eligible = torch.where(allowed, ious, torch.full_like(ious, -1.0))
    chosen = (eligible >= iou).nonzero().flatten()
    if chosen.numel() == 0:
        best = float(eligible.max()) if bool(allowed.any()) else float("nan")
        what = "candidate" if cls is None else f"candidate predicting class {cls}"
        where = (f"{tuple(np.round(box, 1).tolist())} (network-input pixels)" if shown is None
                 else f"{tuple(np.round(shown, 1).tolist())} (original pixels)")
        best_text = "none" if math.isnan(best) else f"{best:.3f}"
        raise NoMatchError(
            f"no {what} overlaps box {where} with IoU >= {iou}; "
            f"best IoU found: {best_text}. Lower `iou`, check the box is xyxy in original-image pixels, or drop `cls`.",
            best_iou=best,
        )
    if cls is None:
        cls = int(probs[:, chosen].max(1).values.argmax())
    order = torch.argsort(ious[chosen], descending=True)
    chosen = chosen[order]
    return Target(box=np.asarray(box, dtype=np.float64), cls=int(cls), candidates=chosen.cpu().numpy(),
                  ious=ious[chosen].cpu().numpy(), kind=kind)


@dataclass
class Detection:
    """One detection after NMS: xyxy box in input pixels, confidence, class, index of its raw candidate."""

    box: np.ndarray
    conf: float
    cls: int
    index: int


def detections(pred: torch.Tensor, nc: int, *, conf: float = 0.25, iou: float = 0.7,
               max_det: int = 300) -> list[Detection]:
    """NMS of one `pred` (4 + nc [+ nm], A) exactly as ultralytics's predictor does it (class-aware, one label)."""
    from ultralytics.utils.nms import non_max_suppression

    out, keep = non_max_suppression(pred.detach().unsqueeze(0), conf, iou, max_det=max_det, nc=nc,
                                    return_idxs=True)
    rows, idx = out[0].cpu().numpy(), keep[0].cpu().numpy().reshape(-1)
    return [Detection(r[:4].astype(np.float64), float(r[4]), int(r[5]), int(i)) for r, i in zip(rows, idx)]


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

"""`explain(model, image, box)`: DetDSHAP relevance for detected boxes (Algorithm 1 of Hogan & Aouf, 2025).

    ex = relprop.explain("best.pt", "bus.jpg", box=(x1, y1, x2, y2))   # one box → Explanation
    exs = relprop.explain("best.pt", "bus.jpg")                          # every detection after NMS → list

An `Explainer` holds the traced, rule-rewritten graph of one model at one input size and a small cache of reference
passes; `explain()` keeps a few Explainers alive between calls so repeated calls trace once and reuse the reference.
All boxes of one image share one forward pass (`RelevanceGraph.forward`), the boxes are then chosen from its outputs,
and each box costs one backward pass over it (`Pass.backward`).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, overload

import numpy as np
import torch

import fxgraph

from . import compiled
from .composites import RulesSpec
from .engine import References, Relevance, RelevanceGraph
from .errors import BoxError, OptionsError
from .explanation import Explanation
from .image import (Letterbox, geometry_for, image_tensor, letterbox_tensor, read_image, reference_inputs,
                    tensor_reference_inputs, to_input)
from .options import ExplainOptions
from .target import (Layout, Target, TargetSet, check_inside, class_target, detections, match, parse_box,
                     topk_detections)


class Explainer:
    """A detector traced at one input size and rewritten with relevance rules, ready to explain images.

    `model`: weights path, .yaml, `YOLO`, ultralytics model, None (the embedded model) or an `fxgraph.FlatGraph`
    (used as is, and moved / cast in place when `device` / `dtype` are given).
    BatchNorm is folded into the convolutions (`fold_bn`, exact up to rounding; channel keys are the conv paths),
    which makes both the forward and the backward cheaper.  `dtype=torch.float64` gives exact completeness checks.
    `compile=True` runs the relevance pass under torch.compile (`relprop.compiled`; None: the measured default);
    `compile="cudagraph"` also captures it as CUDA graphs (torch.compile's "reduce-overhead"; the fastest on an H200,
    docs/benchmarks.md);
    `compile="graph"` runs it as traced ATen graphs, forward and backward, with no compiler and no autograd engine
    (`relprop.joint`; traced in seconds on the first call per image size).
    """

    def __init__(self, model: Any = None, imgsz: int | tuple[int, int] = 640, *, rules: RulesSpec = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None, fold_bn: bool = True,
                 cache_size: int = 4, branch: str | None = None, compile: bool | str | None = None):
        if compile not in (None, False, True, "graph", "cudagraph"):
            raise OptionsError(f"compile={compile!r}: choose True (torch.compile), 'cudagraph' (torch.compile with "
                               "CUDA-graph capture), 'graph' (traced ATen graphs) or False (eager)")
        if isinstance(model, fxgraph.FlatGraph):
            graph = model
            if device is not None or dtype is not None:
                graph.to(device=device, dtype=dtype)
        else:
            graph = fxgraph.trace(model, imgsz, fold_bn=fold_bn, dtype=dtype, device=device, branch=branch)
        self.graph = graph
        self.layout = Layout.of(graph)
        self.rules = rules
        self.engine = RelevanceGraph(graph.module, rules)
        if compile == "graph":
            from .joint import JointRelevance

            self.engine = JointRelevance(self.engine)
        elif compile == "cudagraph":  # inductor, then CUDA graphs replayed per call (plain inductor off CUDA)
            self.engine = compiled.compile_relevance(self.engine, mode="reduce-overhead")
        elif compile or (compile is None and compiled.compile_by_default(graph.device)):  # see relprop.compiled
            self.engine = compiled.compile_relevance(self.engine)
        self.cache_size = cache_size
        self._refs: OrderedDict[tuple, References] = OrderedDict()
        self._blurred: OrderedDict[tuple, tuple[np.ndarray, torch.Tensor]] = OrderedDict()  # image, reference
        self._serial = itertools.count()

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.graph.imgsz

    def reference(self, x0: torch.Tensor, spec: tuple | None = None) -> References:
        """The reference pass for x0, from the cache when the same reference was seen before.  `spec`: x0 is a
        function of this description alone (a black or constant reference of one letterbox), so an entry made for it
        is found by it, with no comparison on the device (which would make the host wait)."""
        if spec is not None:
            return self._cached(self._refs, ("spec", spec), lambda refs: True, lambda: self.engine.reference(x0))
        # Keyed by layout, matched by an exact comparison on x0's device: nothing is copied to or hashed on the host
        # (hashing 32 references of 640x640 cost 157 MB of host traffic per call on CUDA).
        return self._cached(self._refs, (tuple(x0.shape), x0.dtype, x0.device),
                            lambda refs: torch.equal(refs.input, x0), lambda: self.engine.reference(x0))

    def _cached(self, cache: OrderedDict, layout: tuple, same: Callable[[Any], bool], make: Callable[[], Any]) -> Any:
        """The entry of `cache` with this `layout` for which `same(entry)` holds (marked most recently used), else
        `make()` stored under it; at most `cache_size` entries, the least recently used dropped."""
        for key, entry in cache.items():
            if key[0] == layout and same(entry):
                cache.move_to_end(key)
                return entry
        entry = make()
        cache[(layout, next(self._serial))] = entry
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return entry

    @overload
    def explain(self, image: Any, box: None = None, options: ExplainOptions | None = None,
                **changes: Any) -> list[Explanation]: ...

    @overload
    def explain(self, image: Any, box: Sequence[float] | str | np.ndarray, options: ExplainOptions | None = None,
                **changes: Any) -> Explanation | list[Explanation]: ...

    def explain(self, image: Any, box: Sequence[float] | str | np.ndarray | None = None,
                options: ExplainOptions | None = None, **changes: Any) -> Explanation | list[Explanation]:
        """Explain one box (→ Explanation), several boxes ((n, 4) or a list of boxes → list; `cls` may be a list), or,
        with `box=None`, every detection after NMS (→ list, maybe empty).  All of them share one forward pass.
        A classifier takes no box: `explain(image)` explains its top-1 class (or `cls=`) and returns one Explanation.
        For types that do not depend on the argument use `explain_box` (one Explanation) or `explain_boxes` (a list).

        `options` (an `ExplainOptions`) and keyword `changes` to it (target=, keypoint=, iou=, cls=, conf=, max_det=,
        baseline=, batch=) say what is explained; see `relprop.explain`.  An OBB model takes boxes as xywhr or 4 corners.
        """
        opts = ExplainOptions.of(options, **changes)
        out, single = self._explain(image, box, opts)
        return out[0] if single else out

    def explain_box(self, image: Any, box: Sequence[float] | str | np.ndarray | None = None,
                    options: ExplainOptions | None = None, **changes: Any) -> Explanation:
        """Explain exactly one box (xyxy; xywhr or 4 corners for OBB), or a classifier's image (box None)."""
        opts = ExplainOptions.of(options, **changes)
        given, _ = _boxes(box, self.layout.rotated) if box is not None else (None, True)
        if (given is None) != (self.layout.task == "classify") or (given is not None and len(given) != 1):
            raise BoxError("explain_box takes exactly one box (none for a classifier); use explain_boxes for several "
                           "or for every detection")
        return self._explain(image, box, opts)[0][0]

    def explain_boxes(self, image: Any, boxes: Sequence[Any] | np.ndarray | None = None,
                      options: ExplainOptions | None = None, **changes: Any) -> list[Explanation]:
        """Explain a list of boxes (or, with None, every detection after NMS): always a list."""
        opts = ExplainOptions.of(options, **changes)
        if boxes is not None and not isinstance(boxes, str) and len(boxes) and np.ndim(boxes[0]) == 0:
            boxes = [boxes]  # one box given as a flat sequence
        return self._explain(image, boxes, opts)[0]

    def _explain(self, image: Any, box: Any, opts: ExplainOptions) -> tuple[list[Explanation], bool]:
        """The explanations and whether one was asked for: one forward, one batched backward, one read-back."""
        self._check_model_options(opts)
        layout = self.layout
        keypoint = layout.check(opts.target, opts.keypoint, opts.cls)
        given, single = _boxes(box, layout.rotated)
        if layout.task == "classify":
            if given is not None:
                raise BoxError("a classifier explains the whole image: give no box (cls= picks another class)")
            single = True
        x, x0, lb, array = self.inputs(image, opts.baseline)
        for b in given or ():
            check_inside(b, lb.orig_shape)
        total: _Sums | None = None
        found: list[Target] = []
        targets: TargetSet | None = None
        k = x0.shape[0]
        for start in range(0, k, opts.batch):
            chunk = x0[start:start + opts.batch]
            spec = _reference_spec(opts.baseline, lb, start, chunk, isinstance(image, torch.Tensor))
            step = self.engine.forward(x.expand(chunk.shape[0], *x.shape[1:]), self.reference(chunk, spec))
            if targets is None:  # the targets are chosen once, on the outputs at x
                found = self._choose(step.outputs[0][0], lb, given, opts, keypoint)
                if not found:
                    return [], False  # no detection to explain (box=None only)
                targets = TargetSet.build(found, layout, tuple(o[:1] for o in step.outputs), self.imgsz)
            total = _accumulate(total, step.backward(targets.function(step.reference_outputs)))
        assert total is not None
        out = self._explanations(total, k, found, lb, given, opts, array if array is not None else image)
        return out, single

    def inputs(self, image: Any, baseline: Any = "black") -> tuple[torch.Tensor, torch.Tensor, Letterbox,
                                                                   np.ndarray | None]:
        """(x (1, 3, h, w), references x0 (K, 3, h, w), letterbox, the host image array or None) for an image.

        An image tensor is letterboxed, and its "black" / constant / tensor references built, on the graph's device,
        with no host copy (the array is then None); anything else goes through the float HWC BGR array.  A classifier's
        image is resized and centre-cropped instead (`relprop.image.CenterCrop`), on the host, like ultralytics's."""
        g = self.graph
        geometry = geometry_for(self.layout.task)  # a classifier centre-crops, as ultralytics's predictor does
        if isinstance(image, torch.Tensor) and geometry is Letterbox:
            t = image_tensor(image)
            lb = Letterbox.fit(tuple(t.shape[-2:]), self.imgsz)
            x0 = tensor_reference_inputs(baseline, t, lb, g.dtype, g.device)
            if x0 is not None:
                return letterbox_tensor(t, lb, g.dtype, g.device), x0, lb, None
        array = read_image(image)
        lb = geometry.fit(array.shape[:2], self.imgsz)
        blur = isinstance(baseline, str) and baseline == "blur"
        x0 = self._blurred_reference(array, lb) if blur else reference_inputs(baseline, array, lb, g.dtype, g.device)
        return to_input(array, lb, g.dtype, g.device), x0, lb, array

    def _blurred_reference(self, array: np.ndarray, lb: Letterbox) -> torch.Tensor:
        """The "blur" reference of `array`, cached by exact comparison of the image: its Gaussian blur
        (σ = max(H, W)/20) cost more than the relevance pass on a 1920x1080 screenshot, once per explain call."""
        g = self.graph
        return self._cached(self._blurred, (array.shape, array.dtype, lb.new_shape, g.dtype, g.device),
                            lambda entry: np.array_equal(entry[0], array),
                            lambda: (array.copy(), reference_inputs("blur", array, lb, g.dtype, g.device)))[1]

    def match(self, pred: torch.Tensor, lb: Letterbox, box: np.ndarray, cls: int | None, opts: ExplainOptions,
              shown: np.ndarray | None = None, keypoint: int | None = None) -> Target:
        """Match one box in original pixels (xyxy; xywhr for OBB) to the candidates of one `pred` (relprop.target.match
        with this graph's layout), read back: NoMatchError if none qualifies."""
        return self._match(pred, lb, box, cls, opts, shown, keypoint).resolve(opts.iou, cls)

    def _match(self, pred: torch.Tensor, lb: Letterbox, box: np.ndarray, cls: int | None, opts: ExplainOptions,
               shown: np.ndarray | None = None, keypoint: int | None = None) -> Target:
        layout = self.layout
        inside = _rotated_to_input(lb, box) if layout.rotated else lb.box_to_input(box)
        return match(pred, inside, layout, iou=opts.iou, cls=cls, kind=opts.target, keypoint=keypoint, shown=shown)

    def _check_model_options(self, opts: ExplainOptions) -> None:
        """Options that ask for another traced model than this one (imgsz, rules, device, dtype) are refused."""
        g = self.graph
        wrong = []
        if opts.imgsz is not None:
            size = (opts.imgsz, opts.imgsz) if isinstance(opts.imgsz, int) else tuple(opts.imgsz)
            if size != tuple(self.imgsz):
                wrong.append(f"imgsz {opts.imgsz} (traced at {tuple(self.imgsz)})")
        if opts.rules is not None and (opts.rules or "deepshap") != (self.rules or "deepshap"):
            wrong.append(f"rules {opts.rules!r} (built with {self.rules or 'deepshap'!r})")
        if opts.dtype is not None and opts.dtype != g.dtype:
            wrong.append(f"dtype {opts.dtype} (runs in {g.dtype})")
        if opts.branch is not None and g.facts is not None and opts.branch != g.facts.branch:
            wrong.append(f"branch {opts.branch!r} (traced on {g.facts.branch!r})")
        if opts.device is not None and torch.device(opts.device).type != torch.device(g.device).type:
            wrong.append(f"device {opts.device} (runs on {g.device})")
        if wrong:
            raise OptionsError(f"this Explainer cannot explain with {'; '.join(wrong)}: build another one "
                               "(relprop.explainer(model, imgsz, rules=..., device=..., dtype=...)) or use relprop.explain")

    def targets(self, pred: torch.Tensor, lb: Letterbox, given: list[np.ndarray] | None,
                opts: ExplainOptions) -> list[Target]:
        """The targets `opts` asks for in one image's `pred` (given boxes in original pixels, or None: every
        detection), each with its confidence on the device: what `explain` explains, and what the DetDSHAP criterion
        reads when it calibrates on the model's own detections."""
        return self._choose(pred, lb, given, opts, self.layout.check(opts.target, opts.keypoint, opts.cls))

    def _choose(self, pred: torch.Tensor, lb: Letterbox, given: list[np.ndarray] | None, opts: ExplainOptions,
                keypoint: int | None = None) -> list[Target]:
        """The targets of one image's `pred`: given boxes matched on the device (nothing read back), a classifier's
        class, or every detection after NMS (ultralytics's, rotated for OBB; read back, then matched)."""
        layout, nc, cls = self.layout, self.graph.nc, opts.cls
        if layout.task == "classify":
            return [class_target(pred, cls if not isinstance(cls, tuple) else cls[0])]
        if given is not None:
            classes = list(cls) if isinstance(cls, tuple) else [cls] * len(given)
            if len(classes) != len(given):
                raise BoxError(f"{len(classes)} classes given for {len(given)} boxes")
            return [self._match(pred, lb, b, c, opts, shown=b, keypoint=keypoint) for b, c in zip(given, classes)]
        if layout.any_class:  # end-to-end head: top-k selection, no NMS
            dets = topk_detections(pred, nc, conf=opts.conf, max_det=opts.max_det)
        else:
            dets = detections(pred, nc, conf=opts.conf, iou=opts.iou, max_det=opts.max_det, rotated=layout.rotated)
        if cls is not None:
            keep = set(cls) if isinstance(cls, tuple) else {cls}
            dets = [d for d in dets if d.cls in keep]
        found = []
        for d in dets:
            box = _rotated_to_original(lb, d.box) if layout.rotated else lb.box_to_original(d.box, clip=False)
            t = self.match(pred, lb, box, d.cls, opts, keypoint=keypoint)
            t.conf = torch.tensor(d.conf, dtype=torch.float64, device=pred.device)
            found.append(t)
        return found

    def _explanations(self, total: _Sums, k: int, found: list[Target], lb: Letterbox,
                      given: list[np.ndarray] | None, opts: ExplainOptions, image: Any) -> list[Explanation]:
        """The Explanations, from ONE read-back of everything the caller sees (relevance, scores, matches)."""
        attribution = total.attribution.sum(0) / k             # (D, 3, h, w): the mean over the K references
        score = total.score[0]
        reference_score = total.reference_score.sum(0) / k
        delta = attribution.flatten(1).sum(-1) - (score - reference_score)
        channels = total.channels.sum(0) / k                    # (D, ΣC): every filter op's relevance, packed
        pred = total.outputs[0][0]
        extras = [_target_values(t, pred, total.outputs, self.layout) for t in found]
        host = _read_back([attribution, score, reference_score, delta, channels, *extras])
        attribution_h, score_h, reference_h, delta_h, channels_packed = host[:5]
        sizes = [size for _, size in total.keys]
        channels_h = dict(zip((key for key, _ in total.keys),
                              np.split(channels_packed, np.cumsum(sizes)[:-1], axis=-1) if sizes else []))
        array = image if isinstance(image, np.ndarray) else read_image(image)  # for the figure, after the pass
        out = []
        picture = array.astype(np.uint8)  # shared by every explanation of this image (for the figure)
        for d, (t, values) in enumerate(zip(found, host[5:])):
            t = t.resolve(opts.iou, opts.cls if not isinstance(opts.cls, tuple) else opts.cls[d], values)
            rel = torch.from_numpy(attribution_h[d]).to(attribution.dtype)
            heat = lb.map_to_original(rel.sum(0).double().numpy())
            out.append(Explanation(
                heatmap=heat,
                input_relevance=rel,
                channels={key: v[d] for key, v in channels_h.items()},
                score=float(score_h[d]),
                reference_score=float(reference_h[d]),
                delta=float(delta_h[d]),
                box=self._shown_box(t, lb, given, d),
                box_input=t.box if t.box is not None else np.zeros(0),
                cls=t.cls,
                name=str(self.graph.names.get(t.cls, t.cls)),
                target=t.kind,
                candidates=t.candidates,
                ious=t.host_ious,
                conf=t.host_conf,
                baseline=opts.describe_baseline(k),
                index=d,
                image=picture,
                keypoint=t.keypoint,
                keypoints=self._keypoints(values, lb),
                mask=self._mask(values, t, lb, pred.shape[-1]),
            ))
        return out

    def _shown_box(self, t: Target, lb: Letterbox, given: list[np.ndarray] | None, d: int) -> np.ndarray:
        if t.box is None:
            return np.zeros(0)
        if given is not None:
            return np.asarray(given[d], dtype=np.float64)
        return _rotated_to_original(lb, t.box) if t.box.size == 5 else lb.box_to_original(t.box, clip=False)

    def _keypoints(self, values: np.ndarray, lb: Letterbox) -> np.ndarray | None:
        """The best matched candidate's keypoints (nk, ndim) in original pixels (pose), else None."""
        layout = self.layout
        if layout.task != "pose":
            return None
        nk, ndim = layout.kpt_shape
        rows = values[_TARGET_HEAD:_TARGET_HEAD + _column_rows(self.graph)]
        kpts = rows[4 + layout.nc:4 + layout.nc + nk * ndim].reshape(nk, ndim).copy()
        kpts[:, 0] = (kpts[:, 0] - lb.left) / lb.ratio
        kpts[:, 1] = (kpts[:, 1] - lb.top) / lb.ratio
        return kpts

    def _mask(self, values: np.ndarray, t: Target, lb: Letterbox, anchors: int) -> np.ndarray | None:
        """The explained instance's mask (logit > 0 inside its box) in original pixels, for a mask target."""
        if t.kind != "mask":
            return None
        import cv2

        start = _TARGET_HEAD + _column_rows(self.graph)
        logits = values[start:start + self._proto_hw[0] * self._proto_hw[1]].reshape(self._proto_hw)
        h, w = self.imgsz
        full = cv2.resize(logits.astype(np.float64), (w, h), interpolation=cv2.INTER_LINEAR)
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        x1, y1, x2, y2 = t.box[:4]
        full = np.where((xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2), full, -1.0)
        crop = full[lb.top:lb.top + lb.new_unpad[1], lb.left:lb.left + lb.new_unpad[0]]
        return cv2.resize(crop, (lb.orig_shape[1], lb.orig_shape[0]), interpolation=cv2.INTER_LINEAR) > 0

    @property
    def _proto_hw(self) -> tuple[int, int]:
        h, w = self.imgsz
        return (h // 4, w // 4)


# Each target's read-back row: [cls, conf, best] + matched (A) + ious (A), then the best candidate's column of pred and,
# for a mask target, its mask logits at proto resolution.
_TARGET_HEAD = 3


def _column_rows(graph: fxgraph.FlatGraph) -> int:
    return 4 + graph.nc + (graph.nm or 0) + (graph.facts.kpt_shape[0] * graph.facts.kpt_shape[1]
                                              if graph.facts is not None and graph.facts.kpt_shape else 0) + \
        (1 if graph.facts is not None and graph.facts.box_format == "xywhr" else 0)


def _target_values(t: Target, pred: torch.Tensor, outputs: tuple[torch.Tensor, ...], layout: Layout) -> torch.Tensor:
    """What the host needs of one target, as one flat tensor on the device: [cls, conf, best], the best matched
    candidate's column of pred (detectors), its mask logits (mask targets), the matched mask and the IoUs."""
    cls = t.cls if torch.is_tensor(t.cls) else torch.tensor(t.cls, device=pred.device)  # int once resolved (NMS)
    head = torch.stack([cls.to(torch.float64), t.conf.to(torch.float64), t.best.to(torch.float64)])
    parts = [head]
    if pred.dim() == 2:  # (rows, A): a detector
        top = torch.where(t.matched, t.ious, torch.full_like(t.ious, -math.inf)).argmax()
        column = pred.index_select(1, top.reshape(1))[:, 0]
        parts.append(column.double())
        if t.kind == "mask":
            proto = outputs[1][0]
            coef = column[4 + layout.nc:4 + layout.nc + proto.shape[0]]
            parts.append(torch.einsum("j,jhw->hw", coef, proto).flatten().double())
    parts += [t.matched.double(), t.ious.double()]
    return torch.cat(parts)


def _reference_spec(baseline: Any, lb: Letterbox, start: int, chunk: torch.Tensor, from_tensor: bool) -> tuple | None:
    """What a black or constant reference is a function of (its value, the letterbox, the chunk, the layout), or None
    for references that depend on the image or the user's tensors (blur, tensors, background images)."""
    if baseline is None or (isinstance(baseline, str) and baseline == "black"):
        value: Any = "black"
    elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        value = float(baseline)
    elif isinstance(baseline, str) and baseline != "blur":
        value = float(baseline)  # ExplainOptions accepted it as a number
    else:
        return None
    return (value, lb, start, tuple(chunk.shape), chunk.dtype, chunk.device, from_tensor)


def _read_back(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Every tensor as a float64 host array, in one device-to-host transfer (the explain call's one sync)."""
    flat = torch.cat([t.detach().reshape(-1).double() for t in tensors]).cpu().numpy()
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].reshape(t.shape))
        start += t.numel()
    return out


def _rotated_to_input(lb: Letterbox, box: np.ndarray) -> np.ndarray:
    """xywhr in original pixels → network-input pixels (the letterbox scales uniformly: the angle is kept)."""
    b = np.asarray(box, dtype=np.float64).copy()
    b[:4] *= lb.ratio
    b[0] += lb.left
    b[1] += lb.top
    return b


def _rotated_to_original(lb: Letterbox, box: np.ndarray) -> np.ndarray:
    """xywhr in network-input pixels → original pixels."""
    b = np.asarray(box, dtype=np.float64).copy()
    b[0] -= lb.left
    b[1] -= lb.top
    b[:4] /= lb.ratio
    return b


def _boxes(box: Any, rotated: bool = False) -> tuple[list[np.ndarray] | None, bool]:
    """None → (None, False); one box → ([box], True); several boxes (an (n, 4) array or list of boxes) → (boxes, False).
    `rotated` (OBB): a box is xywhr (5 numbers) or 4 corners ((4, 2) or 8 numbers); several are (n, 5), (n, 8) or
    (n, 4, 2)."""
    if box is None:
        return None, False
    if isinstance(box, str):
        return [parse_box(box, rotated)], True
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        return [parse_box(box, rotated)], True  # parse_box raises the informative error
    several = arr.ndim == 3 or (arr.ndim == 2 and not (rotated and arr.shape == (4, 2)))
    if several:
        if arr.shape[0] == 0:
            raise BoxError("an empty list of boxes")
        return [parse_box(b, rotated) for b in arr], False
    return [parse_box(box, rotated)], True


@dataclass
class _Sums:
    """One explain call's running sums over its chunks of references (batch dim 1); the per-filter relevance packed
    into one (1, D, ΣC) tensor in `keys` order (tap key, C): one op per chunk and one read-back, not one per filter op."""

    attribution: torch.Tensor
    score: torch.Tensor
    reference_score: torch.Tensor
    channels: torch.Tensor
    keys: list[tuple[str, int]]
    outputs: tuple[torch.Tensor, ...]


def _accumulate(total: _Sums | None, part: Relevance) -> _Sums:
    """Sum the per-reference results of one chunk of references (batch dim) into the running total."""
    attribution = part.attribution.sum(0, keepdim=True)
    reference_score = part.reference_score.sum(0, keepdim=True)
    values = list(part.channels.values())
    packed = torch.cat(values, -1) if values else part.attribution.new_zeros(*part.attribution.shape[:2], 0)
    channels = packed.sum(0, keepdim=True)
    if total is None:
        keys = [(key, v.shape[-1]) for key, v in part.channels.items()]
        return _Sums(attribution, part.score[:1], reference_score, channels, keys, part.outputs)
    return _Sums(total.attribution + attribution, total.score, total.reference_score + reference_score,
                 total.channels + channels, total.keys, total.outputs)


# -- the function most users call ---------------------------------------------------------------------------------

_EXPLAINERS: OrderedDict[tuple, Explainer] = OrderedDict()
_MAX_EXPLAINERS = 2


def _model_key(model: Any) -> tuple:
    if model is None:
        model = fxgraph.embedded_weights()
    if isinstance(model, (str, Path)):
        p = Path(model)
        stat = p.stat() if p.is_file() else None
        return ("path", str(p.resolve()) if stat else str(p), stat.st_mtime_ns if stat else None)
    params = tuple((t.data_ptr(), t._version) for t in model.parameters()) if hasattr(model, "parameters") else ()
    return ("object", id(model), params)


def explainer(model: Any = None, imgsz: int | tuple[int, int] = 640, *, rules: RulesSpec = None,
              device: str | torch.device | None = None, dtype: torch.dtype | None = None,
              branch: str | None = None) -> Explainer:
    """A cached Explainer for (model, imgsz, rules, device, dtype): traced once, reused while the weights are unchanged
    (a path is re-read when its file changes; an in-memory model when any parameter is replaced or updated in place).
    Only preset rules (None or a name) are cached; a custom dict or Composite builds a fresh Explainer."""
    if isinstance(model, Explainer):
        return model
    if isinstance(model, fxgraph.FlatGraph):
        return Explainer(model, rules=rules, device=device, dtype=dtype)
    if not (rules is None or isinstance(rules, str)):  # a custom composite is not hashable by value: no caching
        return Explainer(model, imgsz, rules=rules, device=device, dtype=dtype, branch=branch)
    rules_key = rules or "deepshap"
    key = (_model_key(model), imgsz if isinstance(imgsz, int) else tuple(imgsz), rules_key, str(device), str(dtype), branch)
    ex = _EXPLAINERS.get(key)
    if ex is None:
        ex = Explainer(model, imgsz, rules=rules, device=device, dtype=dtype, branch=branch)
        _EXPLAINERS[key] = ex
        while len(_EXPLAINERS) > _MAX_EXPLAINERS:
            _EXPLAINERS.popitem(last=False)
    else:
        _EXPLAINERS.move_to_end(key)
    return ex


def explain(model: Any, image: Any, box: Sequence[float] | str | None = None, options: ExplainOptions | None = None,
            **changes: Any) -> Explanation | list[Explanation]:
    """Explain why `model` predicts `box` in `image` (DeepSHAP relevance, exactly conserved).

    model     weights path / .yaml / `YOLO` / ultralytics model / None (embedded) / FlatGraph / Explainer
    image     path, numpy HWC BGR array (as cv2 reads), PIL image, or tensor (3, H, W) RGB in [0, 1]
    box       (x1, y1, x2, y2) in original-image pixels (or "x1,y1,x2,y2"); several boxes (n, 4) → a list;
              None → every detection after NMS (a list)
    options   an `ExplainOptions`, and keyword changes to it: target, iou, cls, conf, max_det, baseline, batch,
              imgsz (default 640), rules, device, dtype, branch (see `ExplainOptions` for each)
    """
    opts = ExplainOptions.of(options, **changes)
    if isinstance(image, torch.Tensor):  # fail fast on a bad image or box, before tracing the model
        image = image_tensor(image)  # a tensor stays a tensor: letterboxed on the model's device
        shape = tuple(image.shape[-2:])
    else:
        image = read_image(image)
        shape = image.shape[:2]
    try:
        boxes = _boxes(box)[0]
    except BoxError:  # an OBB model's xywhr / corners: checked after loading, when the model says it is one
        boxes = None
    for b in boxes or ():
        check_inside(b, shape)
    ex = explainer(model, opts.imgsz or 640, rules=opts.rules, device=opts.device, dtype=opts.dtype, branch=opts.branch)
    return ex.explain(image, box, opts)

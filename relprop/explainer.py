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
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import fxgraph

from . import compiled
from .composites import RulesSpec
from .engine import References, Relevance, RelevanceGraph
from .errors import BoxError, OptionsError
from .explanation import Explanation
from .image import (Letterbox, image_tensor, letterbox_tensor, read_image, reference_inputs,
                    tensor_reference_inputs, to_input)
from .options import ExplainOptions
from .target import Target, check_inside, detections, match, parse_box, topk_detections


class Explainer:
    """A detector traced at one input size and rewritten with relevance rules, ready to explain images.

    `model`: weights path, .yaml, `YOLO`, ultralytics model, None (the embedded model) or an `fxgraph.FlatGraph`
    (used as is, and moved / cast in place when `device` / `dtype` are given).
    BatchNorm is folded into the convolutions (`fold_bn`, exact up to rounding; channel keys are the conv paths),
    which makes both the forward and the backward cheaper.  `dtype=torch.float64` gives exact completeness checks.
    `compile=True` runs the relevance pass under torch.compile (`relprop.compiled`; None: the measured default).
    """

    def __init__(self, model: Any = None, imgsz: int | tuple[int, int] = 640, *, rules: RulesSpec = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None, fold_bn: bool = True,
                 cache_size: int = 4, branch: str | None = None, compile: bool | None = None):
        if isinstance(model, fxgraph.FlatGraph):
            graph = model
            if device is not None or dtype is not None:
                graph.to(device=device, dtype=dtype)
        else:
            graph = fxgraph.trace(model, imgsz, fold_bn=fold_bn, dtype=dtype, device=device, branch=branch)
        self.graph = graph
        self.rules = rules
        self.engine = RelevanceGraph(graph.module, rules)
        if compile or (compile is None and compiled.compile_by_default(graph.device)):  # see relprop.compiled
            self.engine = compiled.compile_relevance(self.engine)
        self.cache_size = cache_size
        self._refs: OrderedDict[tuple, References] = OrderedDict()
        self._blurred: OrderedDict[tuple, tuple[np.ndarray, torch.Tensor]] = OrderedDict()  # image, reference
        self._serial = itertools.count()

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.graph.imgsz

    def reference(self, x0: torch.Tensor) -> References:
        """The reference pass for x0, from the cache when the same reference was seen before."""
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

    def explain(self, image: Any, box: Sequence[float] | str | None = None, options: ExplainOptions | None = None,
                **changes: Any) -> Explanation | list[Explanation]:
        """Explain one box (→ Explanation), several boxes ((n, 4) or a list of boxes → list; `cls` may be a list), or,
        with `box=None`, every detection after NMS (→ list, maybe empty).  All of them share one forward pass.

        `options` (an `ExplainOptions`) and keyword `changes` to it (target=, iou=, cls=, conf=, max_det=, baseline=,
        batch=) say what is explained; see `relprop.explain`.
        """
        opts = ExplainOptions.of(options, **changes)
        self._check_model_options(opts)
        x, x0, lb, array = self.inputs(image, opts.baseline)
        given, single = _boxes(box)
        for b in given or ():
            check_inside(b, lb.orig_shape)
        total: Relevance | None = None
        found: list[Target] = []
        confs: list[float] = []
        weights: torch.Tensor | None = None
        k = x0.shape[0]
        for start in range(0, k, opts.batch):
            chunk = x0[start:start + opts.batch]
            step = self.engine.forward(x.expand(chunk.shape[0], *x.shape[1:]), self.reference(chunk))
            if weights is None:  # the targets are chosen once, on the outputs at x
                pred = step.outputs[0]
                found, confs = self._targets(pred[0], lb, given, opts)
                if not found:
                    return []  # no detection to explain (box=None only)
                weights = torch.stack([t.weights(pred.shape[1], pred.shape[2], pred.dtype, pred.device)
                                       for t in found])
            total = _accumulate(total, step.backward(weights))
        assert total is not None
        array = array if array is not None else read_image(image)  # for the figure, after the relevance pass
        out = self._explanations(total, k, found, confs, array, lb, given, opts.describe_baseline(k))
        return out[0] if single else out

    def inputs(self, image: Any, baseline: Any = "black") -> tuple[torch.Tensor, torch.Tensor, Letterbox,
                                                                   np.ndarray | None]:
        """(x (1, 3, h, w), references x0 (K, 3, h, w), letterbox, the host image array or None) for an image.

        An image tensor is letterboxed, and its "black" / constant / tensor references built, on the graph's device,
        with no host copy (the array is then None); anything else goes through the float HWC BGR array."""
        g = self.graph
        if isinstance(image, torch.Tensor):
            t = image_tensor(image)
            lb = Letterbox.fit(tuple(t.shape[-2:]), self.imgsz)
            x0 = tensor_reference_inputs(baseline, t, lb, g.dtype, g.device)
            if x0 is not None:
                return letterbox_tensor(t, lb, g.dtype, g.device), x0, lb, None
        array = read_image(image)
        lb = Letterbox.fit(array.shape[:2], self.imgsz)
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
              shown: np.ndarray | None = None) -> Target:
        """Match one xyxy box in original pixels to the candidates of one `pred` (relprop.target.match with this
        graph's box format and head); NoMatchError if none qualifies."""
        facts = self.graph.facts
        fmt = facts.box_format if facts is not None else "xywh"
        e2e = facts is not None and facts.branch == "one2one"
        return match(pred, lb.box_to_input(box), self.graph.nc, iou=opts.iou, cls=cls, kind=opts.target,
                     shown=shown, box_format=fmt, any_class=e2e)

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

    def _targets(self, pred: torch.Tensor, lb: Letterbox, given: list[np.ndarray] | None,
                 opts: ExplainOptions) -> tuple[list[Target], list[float]]:
        nc, iou, cls = self.graph.nc, opts.iou, opts.cls
        facts = self.graph.facts
        e2e = facts is not None and facts.branch == "one2one"
        if given is not None:
            classes = list(cls) if isinstance(cls, tuple) else [cls] * len(given)
            if len(classes) != len(given):
                raise BoxError(f"{len(classes)} classes given for {len(given)} boxes")
            found = [self.match(pred, lb, b, c, opts, shown=b) for b, c in zip(given, classes)]
            confs = [float(pred[4 + t.cls, torch.as_tensor(t.candidates, device=pred.device)].max().detach())
                     for t in found]
            return found, confs
        if e2e:  # end-to-end head: top-k selection, no NMS
            dets = topk_detections(pred, nc, conf=opts.conf, max_det=opts.max_det)
        else:
            dets = detections(pred, nc, conf=opts.conf, iou=iou, max_det=opts.max_det)
        if cls is not None:
            keep = set(cls) if isinstance(cls, tuple) else {cls}
            dets = [d for d in dets if d.cls in keep]
        found = [self.match(pred, lb, lb.box_to_original(d.box, clip=False), d.cls, opts) for d in dets]
        return found, [d.conf for d in dets]

    def _explanations(self, total: Relevance, k: int, found: list[Target], confs: list[float], array: np.ndarray,
                      lb: Letterbox, given: list[np.ndarray] | None, baseline: str) -> list[Explanation]:
        attribution = total.attribution.sum(0) / k             # (D, 3, h, w): the mean over the K references
        score = total.score[0]
        reference_score = total.reference_score.sum(0) / k
        delta = attribution.flatten(1).sum(-1) - (score - reference_score)
        channels = {key: (v.sum(0) / k) for key, v in total.channels.items()}
        out = []
        image = array.astype(np.uint8)  # shared by every explanation of this image (for the figure)
        for d, t in enumerate(found):
            rel = attribution[d].detach().cpu()
            heat = lb.map_to_original(rel.sum(0).double().numpy())
            box = given[d] if given is not None else lb.box_to_original(t.box, clip=False)
            out.append(Explanation(
                heatmap=heat,
                input_relevance=rel,
                channels={key: v[d].detach().cpu().double().numpy() for key, v in channels.items()},
                score=float(score[d]),
                reference_score=float(reference_score[d]),
                delta=float(delta[d]),
                box=np.asarray(box, dtype=np.float64),
                box_input=t.box,
                cls=t.cls,
                name=str(self.graph.names.get(t.cls, t.cls)),
                target=t.kind,
                candidates=t.candidates,
                ious=t.ious,
                conf=confs[d],
                baseline=baseline,
                index=d,
                image=image,
            ))
        return out


def _boxes(box: Any) -> tuple[list[np.ndarray] | None, bool]:
    """None → (None, False); one box → ([box], True); several boxes (an (n, 4) array or list of boxes) → (boxes, False)."""
    if box is None:
        return None, False
    if isinstance(box, str):
        return [parse_box(box)], True
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        return [parse_box(box)], True  # parse_box raises the informative error
    if arr.ndim == 2:
        if arr.shape[0] == 0:
            raise BoxError("an empty list of boxes")
        return [parse_box(b) for b in arr], False
    return [parse_box(box)], True


def _accumulate(total: Relevance | None, part: Relevance) -> Relevance:
    """Sum the per-reference results of one chunk of references (batch dim) into the running total."""
    attribution = part.attribution.sum(0, keepdim=True)
    reference_score = part.reference_score.sum(0, keepdim=True)
    channels = {k: v.sum(0, keepdim=True) for k, v in part.channels.items()}
    if total is None:
        return Relevance(attribution, part.score[:1], reference_score, part.delta, channels, part.outputs)
    return Relevance(
        total.attribution + attribution, total.score, total.reference_score + reference_score, total.delta,
        {k: total.channels[k] + v for k, v in channels.items()}, total.outputs,
    )


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
    for b in _boxes(box)[0] or ():
        check_inside(b, shape)
    ex = explainer(model, opts.imgsz or 640, rules=opts.rules, device=opts.device, dtype=opts.dtype, branch=opts.branch)
    return ex.explain(image, box, opts)

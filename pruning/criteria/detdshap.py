"""DetDSHAP: Σ |DeepSHAP relevance| of each filter over calibration boxes (the paper's Algorithm 2, Eq. 13)."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
import torch

import fxgraph

from ..coupling import Coupling
from ..errors import PruningError
from ..criterion import Scores
from . import distributed
from .calibration import Calibration
from .progress import progress
from .stats import FilterStats, add_stat, unit_scores


class DetDSHAP:
    """Σ over calibration images and boxes of |relevance| of each filter (the paper's Eq. 13).

    `boxes="labels"` explains every ground-truth box (class = its label; boxes no candidate matches at `iou` are
    skipped and counted in `skipped`); `"detections"` explains the model's own detections after NMS.
    `target` is what is explained of each box (relprop.target): its class probability ("class", the paper), its
    coordinates ("box"), or both ("all"), where each of the two explanations of a box is scaled to a total
    |relevance| of 1 so that probabilities and pixels weigh alike (filters that only localise count too).  "all"
    adds the task's own outputs of each box as a third explanation, also scaled to 1: a pose model's keypoint rows,
    an OBB model's angle row (both from `relprop.target.Layout.task_rows`), a segmenter's mask (relprop's
    `target="mask"`: the mask logits summed in the box, built by `relprop.target.TargetSet`); a classifier explains
    each image's class only.
    `task_outputs=False` keeps "all" to the class and the coordinates (the paper's two explanations).

    Batched: `batch` images share one forward, and every (box, kind) of every image of it one backward pass per
    slot: slot s of image b holds b's s-th (box, kind), so a pass seeds one target of each image at once (the
    images of a batch do not interact).  `chunk` slots per backward run vmapped (`Pass.channel_relevance`; > 1
    pays on GPU, not on CPU).  Images are grouped by label count so that a group's images fill about as many slots.
    """

    name = "detdshap"
    TARGETS = {"class": ("class",), "box": ("box",), "all": ("class", "box")}

    def __init__(self, calibration: Calibration, *, boxes: str = "labels", iou: float = 0.7,
                 baseline: Any = "black", rules: Any = None, conf: float = 0.25, target: str = "all",
                 batch: int = 8, chunk: int = 1, task_outputs: bool = True) -> None:
        import relprop

        if boxes not in ("labels", "detections"):
            raise PruningError(f"DetDSHAP boxes must be 'labels' or 'detections', got {boxes!r}")
        if target not in self.TARGETS:
            raise PruningError(f"DetDSHAP target must be one of {', '.join(self.TARGETS)}, got {target!r}")
        try:  # one explanation per kind of target: the class, the coordinates, or both separately
            self.options = {kind: relprop.ExplainOptions(target=kind, iou=iou, conf=conf, baseline=baseline, rules=rules)
                            for kind in self.TARGETS[target]}
        except relprop.RelpropError as exc:
            raise PruningError(f"DetDSHAP: {exc}") from exc
        if int(batch) < 1 or int(chunk) < 1:
            raise PruningError(f"DetDSHAP batch and chunk must be at least 1, got batch={batch}, chunk={chunk}")
        self.calibration, self.boxes, self.iou = calibration, boxes, iou
        self.batch, self.chunk = int(batch), int(chunk)
        self.kinds = self.TARGETS[target]
        self.target = target
        self.task_outputs = bool(task_outputs)
        self.active = self.kinds  # the kinds explained on the graph being scored (+ "task" rows, see filter_stats)
        self.task_rows: np.ndarray | None = None
        self.explained = 0
        self.skipped = 0

    def filter_stats(self, graph: fxgraph.FlatGraph) -> FilterStats:
        import relprop

        explainer = relprop.Explainer(graph.with_folded_batchnorm(), rules=self.options[self.kinds[0]].rules)
        extra = self.target == "all" and self.task_outputs
        self.task_rows = explainer.layout.task_rows() if extra else None
        mask = extra and graph.task == "segment"  # the instance mask: a product of outputs, not rows (TargetSet)
        self.active = self.kinds + (("task",) if self.task_rows is not None else ()) + (("mask",) if mask else ())
        stats: FilterStats = {}
        self.explained = self.skipped = 0
        groups = _groups(self.calibration.images(), self.batch, by_labels=self.boxes == "labels")
        batches = -(-self.calibration.n_images // self.batch)  # the bar advances as each batch is scored
        for group in progress(groups, f"detdshap scoring ({self.batch} images a batch)", total=batches):
            self._score(explainer, group, stats)
        counts = distributed.all_reduce_sums({"n": torch.tensor([float(self.explained), float(self.skipped)])})["n"]
        self.explained, self.skipped = int(counts[0]), int(counts[1])
        if self.explained == 0:
            raise PruningError(
                f"DetDSHAP explained no box of the {self.calibration.n_images} calibration images "
                f"({self.skipped} boxes matched no candidate at IoU {self.iou}); train the model longer, lower "
                "`iou`, or score the model's own detections (calib_boxes=detections)"
            )
        return stats

    def __call__(self, graph: fxgraph.FlatGraph, coupling: Coupling) -> Scores:
        return unit_scores(coupling, distributed.all_reduce_sums(self.filter_stats(graph)))

    def _score(self, explainer: Any, group: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
               stats: FilterStats) -> None:
        """Add Σ |relevance| per filter of every matched (box, kind) of a group of images to `stats`: one forward of
        the group, then `Pass.channel_relevance` over (image, slot) targets."""
        import relprop
        from relprop.target import TargetSet, check_inside, parse_box

        opts = self.options[self.kinds[0]]  # the kinds differ only in what is explained, not in which boxes
        inputs = [explainer.inputs(image, opts.baseline) for image, _, _ in group]
        n_img, n_ref = len(group), inputs[0][1].shape[0]
        x = torch.cat([i[0] for i in inputs]).repeat_interleave(n_ref, 0)  # (B·K, 3, h, w): image b at b·K + k
        x0s = [i[1] for i in inputs]
        if all(r.shape == x0s[0].shape and torch.equal(r, x0s[0]) for r in x0s[1:]):  # e.g. black: one cached pass
            refs = explainer.reference(x0s[0] if n_ref == 1 else x0s[0].repeat(n_img, 1, 1, 1))
        else:
            refs = explainer.engine.reference(torch.cat(x0s))
        step = explainer.engine.forward(x, refs)
        pred = step.outputs[0]
        found: list[list[Any]] = []
        classify = explainer.layout.task == "classify"
        for b, ((_, boxes, classes), (_, _, lb, _)) in enumerate(zip(group, inputs)):
            p = pred[b * n_ref]
            if classify:  # the labelled class (labels) or the top-1 class (detections); pred holds (nc,) scores
                cls = int(classes[0]) if self.boxes == "labels" and len(classes) else int(p.argmax())
                found.append([ClassTarget(cls, np.array([cls]))])
                continue
            if self.boxes == "detections":
                found.append(explainer.targets(p, lb, None, opts))  # the image's detections, matched and read back
                continue
            targets = []
            for box, cls in zip(boxes.tolist(), classes.tolist()):
                box = parse_box(box, rotated=len(box) == 5)
                check_inside(box, lb.orig_shape)
                try:
                    targets.append(explainer.match(p, lb, box, int(cls), opts, shown=box))
                except relprop.NoMatchError:
                    self.skipped += 1
            found.append(targets)
        self.explained += sum(len(f) for f in found)
        per_kind = max(len(f) for f in found)
        if per_kind == 0:
            return
        slots = per_kind * len(self.active)
        anchors = pred.shape[-1]
        rows_b, rows_s, rows_i = [], [], []
        masks: list[Any] = []  # the mask targets, and for each (row of the batch, slot) the index of its target
        mask_b, mask_s, mask_m = [], [], []
        valid = torch.zeros(n_img, slots, dtype=torch.bool)
        for b, targets in enumerate(found):
            for j, t in enumerate(targets):
                for k, kind in enumerate(self.active):
                    if classify and kind != "class":
                        continue  # a classifier has no box rows: its class is its only target
                    if kind == "mask":
                        for r in range(n_ref):
                            mask_b.append(b * n_ref + r)
                            mask_s.append(k * per_kind + j)
                            mask_m.append(len(masks))
                        masks.append(dataclasses.replace(t, kind="mask"))
                        valid[b, k * per_kind + j] = True
                        continue
                    rows = np.array([0]) if classify else np.array([4 + t.cls]) if kind == "class" \
                        else self.task_rows if kind == "task" else np.arange(4)
                    flat = (rows[:, None] * anchors + np.asarray(t.candidates)[None, :]).ravel()
                    for r in range(n_ref):
                        rows_b.append(np.full(flat.size, b * n_ref + r))
                        rows_s.append(np.full(flat.size, k * per_kind + j))
                        rows_i.append(flat)
                    valid[b, k * per_kind + j] = True
        device = pred.device
        bi, si, fi = (torch.as_tensor(np.concatenate(v), dtype=torch.long, device=device)
                      for v in (rows_b, rows_s, rows_i))
        mask_fn = None
        if masks:  # relprop's mask targets: Σ_d products u_d·v_d split against the reference (TargetSet.function)
            mask_fn = TargetSet.build(masks, explainer.layout, step.outputs, explainer.imgsz).function(
                step.reference_outputs)
            mb, ms, mm = (torch.as_tensor(v, dtype=torch.long, device=device) for v in (mask_b, mask_s, mask_m))

        def scores(outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
            """(B·K, slots): Σ of the explained rows of the matched candidates, slot by slot (linear in the output),
            plus each mask slot's mask target (its image's row of the TargetSet's (B·K, M) values)."""
            y = outputs[0].flatten(1)
            out = torch.zeros(y.shape[0], slots, dtype=y.dtype, device=y.device)
            out = out.index_put((bi, si), y[bi, fi], accumulate=True)
            if mask_fn is not None:
                out = out.index_put((mb, ms), mask_fn(outputs)[mb, mm], accumulate=True)
            return out

        channels = step.channel_relevance(scores, chunk=self.chunk)
        with torch.no_grad():
            relevance = {key: (v.view(n_img, n_ref, slots, -1).sum(1) / n_ref).double().abs()
                         for key, v in channels.items()}
            weight = valid.to(device=device, dtype=torch.float64)
            if len(self.active) > 1:  # each explanation scaled to a total |relevance| of 1
                total = sum(r.sum(-1) for r in relevance.values())
                weight = torch.where(total > 0, weight / total.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
            for path, r in relevance.items():
                add_stat(stats, path, (r * weight[..., None]).sum((0, 1)))


class ClassTarget(NamedTuple):
    """A classifier's explained class: row 0 of its (nc,) output read at "candidate" `cls`."""

    cls: int
    candidates: np.ndarray


def _groups(images: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], batch: int, *,
            by_labels: bool) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Images in groups of `batch`; with `by_labels`, a window of 4 groups is sorted by label count first, so that a
    group's images need about as many backward slots (fewer empty slots) while only 4 groups are held at once."""
    window: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    size = batch * 4 if by_labels else batch
    for item in images:
        window.append(item)
        if len(window) == size:
            yield from _split(window, batch, by_labels)
            window = []
    if window:
        yield from _split(window, batch, by_labels)


def _split(window: list, batch: int, by_labels: bool) -> Iterator[list]:
    if by_labels:
        window = sorted(window, key=lambda item: len(item[1]))
    for start in range(0, len(window), batch):
        yield window[start:start + batch]

"""DetDSHAP: Σ |DeepSHAP relevance| of each filter over calibration boxes (the paper's Algorithm 2, Eq. 13)."""

from __future__ import annotations

from typing import Any

import torch

import fxgraph

from ..coupling import Coupling
from ..errors import PruningError
from ..importance import Scores
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
    |relevance| of 1 so that probabilities and pixels weigh alike (filters that only localise count too).
    """

    name = "detdshap"
    TARGETS = {"class": ("class",), "box": ("box",), "all": ("class", "box")}

    def __init__(self, calibration: Calibration, *, boxes: str = "labels", iou: float = 0.7,
                 baseline: Any = "black", rules: Any = None, conf: float = 0.25, target: str = "all") -> None:
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
        self.calibration, self.boxes, self.iou = calibration, boxes, iou
        self.kinds = self.TARGETS[target]
        self.explained = 0
        self.skipped = 0

    def _explain(self, explainer: Any, image: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
                 kind: str) -> tuple[list[Any], int]:
        """The explanations of one image's boxes for one target kind, and how many boxes matched nothing."""
        import relprop

        options = self.options[kind]
        if self.boxes == "detections":
            return explainer.explain(image, None, options), 0
        explanations, skipped = [], 0
        for box, cls in zip(boxes.tolist(), classes.tolist()):
            try:
                explanations.append(explainer.explain(image, box, options, cls=int(cls)))
            except relprop.NoMatchError:
                skipped += 1
        return explanations, skipped

    def filter_stats(self, graph: fxgraph.FlatGraph) -> FilterStats:
        import relprop

        explainer = relprop.Explainer(graph.with_folded_batchnorm(), rules=self.options[self.kinds[0]].rules)
        stats: FilterStats = {}
        self.explained = self.skipped = 0
        for image, boxes, classes in progress(self.calibration.images(), "detdshap scoring",
                                              total=self.calibration.n_images):
            for k, kind in enumerate(self.kinds):
                explanations, skipped = self._explain(explainer, image, boxes, classes, kind)
                if k == 0:  # matching does not depend on the kind: count boxes once
                    self.explained += len(explanations)
                    self.skipped += skipped
                for ex in explanations:
                    relevance = {p: abs(torch.as_tensor(r, dtype=torch.float64)) for p, r in ex.channels.items()}
                    if len(self.kinds) > 1:
                        total = sum(float(r.sum()) for r in relevance.values())
                        relevance = {p: r / total for p, r in relevance.items()} if total > 0 else {}
                    for path, r in relevance.items():
                        add_stat(stats, path, r)
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


"""Data-driven criteria on the embedded model: a filter forced to zero scores zero (the lowest), scores repeat."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import ultralytics
from ultralytics.cfg import get_cfg
from ultralytics.data.augment import LetterBox
from ultralytics.utils import DEFAULT_CFG

import fxgraph
import pruning
from pruning.criteria.calibration import Calibration
from pruning.errors import PruningError
from pruning.criteria import HSIC, DetDSHAP, Taylor
from pruning.criteria.stats import unit_scores
from relprop.target import detections

IMGSZ = 256
ASSETS = Path(ultralytics.__file__).parent / "assets"
GROUP, FILTER = "model.3.conv", 5  # a backbone Conv's filter, silenced below


@pytest.fixture(scope="module")
def silenced():
    """The embedded model with filter FILTER of GROUP producing exactly zero, traced, with its coupling."""
    model = copy.deepcopy(fxgraph.load_ultralytics(None))
    layer = model.get_submodule(GROUP.rsplit(".", 1)[0])
    with torch.no_grad():
        layer.conv.weight[FILTER] = 0
        layer.bn.weight[FILTER] = 0
        layer.bn.bias[FILTER] = 0
    graph = fxgraph.trace(model, IMGSZ)
    return graph, pruning.analyze(graph)


@pytest.fixture(scope="module")
def calibration(silenced) -> Calibration:
    """bus.jpg, zidane.jpg and a mirrored bus.jpg, each labelled with the model's most confident detection."""
    graph, _ = silenced
    imgs, boxes, classes, index = [], [], [], []
    for i, img in enumerate([cv2.imread(str(ASSETS / "bus.jpg")), cv2.imread(str(ASSETS / "zidane.jpg")),
                             cv2.imread(str(ASSETS / "bus.jpg"))[:, ::-1]]):
        lb = LetterBox((IMGSZ, IMGSZ), auto=False)(image=np.ascontiguousarray(img))
        x = torch.from_numpy(lb[:, :, ::-1].copy()).permute(2, 0, 1)
        with torch.no_grad():
            pred = graph.module(x[None].float() / 255)[0][0]
        dets = detections(pred, graph.nc, conf=0.25, iou=0.7)[:1]
        assert dets, "the embedded model should find people in the test images"
        for d in dets:
            x1, y1, x2, y2 = (float(v) for v in d.box)
            boxes.append([(x1 + x2) / 2 / IMGSZ, (y1 + y2) / 2 / IMGSZ, (x2 - x1) / IMGSZ, (y2 - y1) / IMGSZ])
            classes.append([float(d.cls)])
            index.append(float(i))
        imgs.append(x)
    batch = {"img": torch.stack(imgs), "bboxes": torch.tensor(boxes), "cls": torch.tensor(classes),
             "batch_idx": torch.tensor(index)}
    return Calibration([batch], "detect", IMGSZ, get_cfg(DEFAULT_CFG, {"imgsz": IMGSZ}))


def _check_silenced_is_lowest(scores, coupling, live: float = 0.95, dead: float = 0.0):
    """The silenced filter scores `dead` (0; HSIC-Lasso's score of a constant feature is -2, as its live scores go
    below 0) = the lowest of all prunable units, while at least `live` of its layer's filters score above it."""
    prunable = {g.name for g in coupling.prunable()}
    assert GROUP in prunable
    s = scores[GROUP]
    unit = next(u for u, unit in enumerate(coupling.groups[GROUP].units) if (GROUP, FILTER) in unit.sources)
    assert s[unit] == dead
    assert (s > dead).sum() >= live * len(s) and (s > dead).any()
    everything = torch.cat([scores[name] for name in prunable])
    assert s[unit] <= everything.min()


def test_detdshap_scores_a_silenced_filter_lowest_and_repeats(silenced, calibration):
    graph, coupling = silenced
    criterion = DetDSHAP(calibration, boxes="labels", iou=0.7)
    first = criterion(graph, coupling)
    assert criterion.explained == 3 and criterion.skipped == 0
    _check_silenced_is_lowest(first, coupling)
    second = criterion(graph, coupling)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_detdshap_box_and_class_target_weighs_each_explanation_alike_and_still_finds_the_silenced_filter(
        silenced, calibration):
    graph, coupling = silenced
    both = DetDSHAP(calibration, target="all")
    stats = both.filter_stats(graph)
    assert both.explained == 3 and both.skipped == 0  # boxes are counted once, not once per kind
    total = sum(float(v.sum()) for v in stats.values())
    assert total == pytest.approx(2 * both.explained, rel=1e-9)  # class and box: a total |relevance| of 1 each
    box_only = DetDSHAP(calibration, target="box").filter_stats(graph)
    class_only = DetDSHAP(calibration, target="class").filter_stats(graph)
    assert not torch.allclose(box_only["model.22.cv2.0.0.conv"] / box_only["model.22.cv2.0.0.conv"].sum(),
                              class_only["model.22.cv2.0.0.conv"] / class_only["model.22.cv2.0.0.conv"].sum())
    _check_silenced_is_lowest(both(graph, coupling), coupling)
    with pytest.raises(PruningError, match="target must be one of class, box, all"):
        DetDSHAP(calibration, target="mask")


@pytest.mark.parametrize("make, dead", [(Taylor, 0.0), (HSIC, -2.0)], ids=["taylor", "hsic"])
def test_taylor_and_hsic_score_a_silenced_filter_lowest_and_repeat(silenced, calibration, make, dead):
    graph, coupling = silenced
    first = make(calibration)(graph, coupling)
    _check_silenced_is_lowest(first, coupling, 0.95, dead)
    second = make(calibration)(graph, coupling)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_unit_scores_add_the_filters_of_coupled_channels(silenced):
    _, coupling = silenced
    group = next(g for g in coupling.groups.values() if any(len(u.sources) > 1 for u in g.units))
    stats = {path: torch.ones(1024, dtype=torch.float64) for path in group.sources}
    scores = unit_scores(coupling, stats)[group.name]
    assert scores.tolist() == [float(len(u.sources)) for u in group.units]


def test_random_criterion_is_seeded(silenced):
    graph, coupling = silenced
    a, b, c = (pruning.RandomCriterion(seed)(graph, coupling) for seed in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)

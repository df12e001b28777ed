"""Batched DetDSHAP scoring (issue 12): every box of several images in one forward and batched backwards gives the
per-filter scores of explaining each box on its own (the per-box path, `relprop.Explainer.explain`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ultralytics.cfg import get_cfg
from ultralytics.utils import DEFAULT_CFG

import fxgraph
import relprop
from conftest import random_model
from pruning.criteria import DetDSHAP
from pruning.criteria.calibration import Calibration
from relprop.target import xywh_to_xyxy

IMGSZ = 128
COUNTS = (1, 3, 2)  # labels per image: different, so a group mixes full and padded slots


@pytest.fixture(scope="module")
def graph() -> fxgraph.FlatGraph:
    return fxgraph.trace(random_model("yolov8n.yaml"), IMGSZ, dtype=torch.float64)


def labelled_calibration(graph: fxgraph.FlatGraph, counts: tuple[int, ...], seed: int, task: str, *,
                         unmatched: bool) -> Calibration:
    """Random images (one per entry of `counts`), image i labelled with its own `counts[i]` most confident,
    well-separated candidates (so each label matches in its own image only); `unmatched` adds one label per image
    that matches nothing (a 3-pixel box in a corner)."""
    gen = torch.Generator().manual_seed(seed)
    imgs = [(torch.rand(3, IMGSZ, IMGSZ, generator=gen) * 255).round().to(torch.uint8) for _ in counts]
    labels, classes, index = [], [], []
    for i, (img, count) in enumerate(zip(imgs, counts)):
        with torch.no_grad():
            pred = graph.module(img[None].double() / 255)[0][0]
        probs = pred[4:4 + graph.nc]
        order = probs.amax(0).argsort(descending=True)
        chosen = []
        for a in order.tolist():  # well-separated candidates: distinct boxes, so distinct explanations
            box = xywh_to_xyxy(pred[:4, a][None])[0]
            inside = bool((box >= 0).all() and (box <= IMGSZ).all())  # a label as given: no clipping needed
            if inside and (box[2:] - box[:2]).min() > 4 and all(float(relprop.target.box_iou(box, c[None])[0]) < 0.3
                                                      for c, _ in chosen):
                chosen.append((box, a))
            if len(chosen) == count:
                break
        assert len(chosen) == count
        for box, a in chosen:
            x1, y1, x2, y2 = box.tolist()
            labels.append([(x1 + x2) / 2 / IMGSZ, (y1 + y2) / 2 / IMGSZ, (x2 - x1) / IMGSZ, (y2 - y1) / IMGSZ])
            classes.append([float(probs[:, a].argmax())])
            index.append(float(i))
        if unmatched:  # skipped, counted
            labels.append([1.5 / IMGSZ, 1.5 / IMGSZ, 3 / IMGSZ, 3 / IMGSZ])
            classes.append([0.0])
            index.append(float(i))
    batch = {"img": torch.stack(imgs), "bboxes": torch.tensor(labels), "cls": torch.tensor(classes),
             "batch_idx": torch.tensor(index)}
    return Calibration([batch], task, IMGSZ, get_cfg(DEFAULT_CFG, {"imgsz": IMGSZ}))


@pytest.fixture(scope="module")
def calibration(graph) -> Calibration:
    """Three random images, each labelled with its own most confident candidates, plus one label per image that
    matches nothing."""
    return labelled_calibration(graph, COUNTS, 1, "detect", unmatched=True)


@pytest.fixture(scope="module")
def per_box(graph, calibration) -> dict[float, list[dict[str, dict[str, torch.Tensor]] | None]]:
    """The unbatched reference, for iou 0.7 and 0.01: one `Explainer.explain` per box and kind (kind → its channel
    relevance; None for a box that matched nothing), as DetDSHAP scored before batching."""
    ex = relprop.Explainer(graph.with_folded_batchnorm())
    out: dict[float, list] = {}
    for iou, kinds in ((0.7, ("class", "box")), (0.01, ("class",))):
        out[iou] = []
        for image, boxes, classes in calibration.images():
            for box, cls in zip(boxes.tolist(), classes.tolist()):
                try:
                    out[iou].append({kind: {p: torch.as_tensor(r, dtype=torch.float64)
                                            for p, r in ex.explain(image, box, target=kind, iou=iou,
                                                                   cls=int(cls)).channels.items()}
                                     for kind in kinds})
                except relprop.NoMatchError:
                    out[iou].append(None)
    return out


def per_box_stats(boxes, kinds) -> tuple[dict[str, torch.Tensor], int, int]:
    """Σ over boxes and kinds of |channel relevance|, each explanation scaled to a total of 1 when there are two
    kinds: the old per-box DetDSHAP loop."""
    stats: dict[str, torch.Tensor] = {}
    explained = sum(b is not None for b in boxes)
    for b in boxes:
        for kind in kinds if b is not None else ():
            rel = {p: r.abs() for p, r in b[kind].items()}
            if len(kinds) > 1:
                total = sum(float(r.sum()) for r in rel.values())
                rel = {p: r / total for p, r in rel.items()}
            for p, r in rel.items():
                stats[p] = stats[p] + r if p in stats else r.clone()
    return stats, explained, len(boxes) - explained


@pytest.mark.parametrize("target,batch,chunk", [("all", 8, 1), ("class", 2, 1), ("box", 3, 2)])
def test_batched_scores_equal_the_per_box_sums(graph, calibration, per_box, target, batch, chunk):
    kinds = DetDSHAP.TARGETS[target]
    expected, explained, skipped = per_box_stats(per_box[0.7], kinds)
    assert explained == sum(COUNTS) and skipped == len(COUNTS)
    criterion = DetDSHAP(calibration, iou=0.7, target=target, batch=batch, chunk=chunk)
    got = criterion.filter_stats(graph)
    assert (criterion.explained, criterion.skipped) == (explained, skipped)
    assert got.keys() == expected.keys()
    for path in expected:
        scale = float(expected[path].abs().max())
        torch.testing.assert_close(got[path], expected[path], rtol=1e-7, atol=1e-9 * scale, msg=path)
    if target == "all":  # two explanations of total 1 per box
        assert sum(float(v.sum()) for v in got.values()) == pytest.approx(2 * explained, rel=1e-9)


def test_batched_scores_see_which_image_each_box_belongs_to(graph, calibration, per_box):
    """Moving the labels to other images changes the scores: the comparison above can tell images apart."""
    moved = dict(calibration.batches[0])
    moved["batch_idx"] = (moved["batch_idx"] + 1) % len(COUNTS)
    shifted = Calibration([moved], calibration.task, calibration.imgsz, calibration.args)
    expected, _, _ = per_box_stats(per_box[0.01], ("class",))
    got = DetDSHAP(shifted, iou=0.01, target="class").filter_stats(graph)
    diff = max(float((got[p] - expected[p]).abs().max() / expected[p].abs().max()) for p in expected)
    assert diff > 1e-3


def test_a_group_of_images_is_sorted_by_label_count_and_keeps_every_image():
    from pruning.criteria.detdshap import _groups

    items = [(torch.zeros(1), torch.zeros(n, 4), torch.zeros(n)) for n in (3, 0, 5, 1, 2)]
    groups = list(_groups(iter(items), 2, by_labels=True))
    assert [[len(i[1]) for i in g] for g in groups] == [[0, 1], [2, 3], [5]]
    assert [[len(i[1]) for i in g] for g in _groups(iter(items), 2, by_labels=False)] == [[3, 0], [5, 1], [2]]
    assert np.isclose(sum(len(g) for g in groups), len(items))


def test_batched_detections_equal_the_per_image_explanations(graph, calibration):
    """boxes="detections": each image's own detections after NMS (2 per image here), batched as the labels are."""
    conf, max_det = 1e-9, 2
    ex = relprop.Explainer(graph.with_folded_batchnorm())
    expected: dict[str, torch.Tensor] = {}
    count = 0
    for image, _, _ in calibration.images():
        for e in ex.explain(image, None, target="class", conf=conf, max_det=max_det):
            count += 1
            for p, r in e.channels.items():
                r = torch.as_tensor(r, dtype=torch.float64).abs()
                expected[p] = expected[p] + r if p in expected else r
    assert count == max_det * len(COUNTS)
    criterion = DetDSHAP(calibration, boxes="detections", conf=conf, target="class", batch=2)
    criterion.options = {k: relprop.ExplainOptions.of(o, max_det=max_det) for k, o in criterion.options.items()}
    got = criterion.filter_stats(graph)
    assert (criterion.explained, criterion.skipped) == (count, 0)
    for path in expected:
        torch.testing.assert_close(got[path], expected[path], rtol=1e-7,
                                   atol=1e-9 * float(expected[path].abs().max()), msg=path)

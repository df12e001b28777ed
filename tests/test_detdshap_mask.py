"""DetDSHAP's calib_target=all on a segmenter adds each box's mask (relprop's target="mask") as a third explanation
scaled to 1: the batched scores equal the per-box sums of `Explainer.explain(target=...)` for class, box and mask."""

from __future__ import annotations

import pytest
import torch

import fxgraph
import relprop
from conftest import random_model
from pruning.criteria import DetDSHAP
from pruning.criteria.calibration import Calibration
from test_detdshap_batched import labelled_calibration, per_box_stats

IMGSZ = 128
COUNTS = (1, 2)  # labels per image


@pytest.fixture(scope="module")
def graph() -> fxgraph.FlatGraph:
    return fxgraph.trace(random_model("yolov8n-seg.yaml"), IMGSZ, dtype=torch.float64)


@pytest.fixture(scope="module")
def calibration(graph) -> Calibration:
    """Two random images, each labelled with its own most confident, well-separated candidates."""
    return labelled_calibration(graph, COUNTS, 3, "segment", unmatched=False)


@pytest.fixture(scope="module")
def per_box(graph, calibration) -> list[dict[str, dict[str, torch.Tensor]]]:
    """One `Explainer.explain` per box and kind (class, box, mask): kind -> its channel relevance."""
    ex = relprop.Explainer(graph.with_folded_batchnorm())
    return [{kind: {p: torch.as_tensor(r, dtype=torch.float64)
                    for p, r in ex.explain(image, box, target=kind, iou=0.7, cls=int(cls)).channels.items()}
             for kind in ("class", "box", "mask")}
            for image, boxes, classes in calibration.images() for box, cls in zip(boxes.tolist(), classes.tolist())]


def _assert_stats_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for path in expected:
        scale = float(expected[path].abs().max())
        torch.testing.assert_close(got[path], expected[path], rtol=1e-7, atol=1e-9 * scale, msg=path)


@pytest.mark.parametrize("batch", [2, 1])
def test_all_on_a_segmenter_adds_each_box_mask_scaled_to_one(graph, calibration, per_box, batch):
    expected, explained, _ = per_box_stats(per_box, ("class", "box", "mask"))
    criterion = DetDSHAP(calibration, iou=0.7, target="all", batch=batch)
    got = criterion.filter_stats(graph)
    assert criterion.active == ("class", "box", "mask") and criterion.explained == explained == sum(COUNTS)
    _assert_stats_equal(got, expected)
    assert sum(float(v.sum()) for v in got.values()) == pytest.approx(3 * explained, rel=1e-9)


def test_the_mask_adds_exactly_its_own_share(graph, calibration, per_box):
    """score(all) - score(all without the task's outputs) is Σ over boxes of the mask's |relevance| scaled to 1,
    and it is not zero: the mask explanation reaches filters with its own weights."""
    with_mask = DetDSHAP(calibration, iou=0.7, target="all").filter_stats(graph)
    plain = DetDSHAP(calibration, iou=0.7, target="all", task_outputs=False)
    without = plain.filter_stats(graph)
    assert plain.active == ("class", "box")
    _assert_stats_equal(without, per_box_stats(per_box, ("class", "box"))[0])
    mask_only = {}
    for b in per_box:
        total = sum(float(r.abs().sum()) for r in b["mask"].values())
        for p, r in b["mask"].items():
            mask_only[p] = mask_only.get(p, 0) + r.abs() / total
    _assert_stats_equal({p: with_mask[p] - without[p] for p in with_mask}, mask_only)
    assert max(float((with_mask[p] - without[p]).abs().max()) for p in with_mask) > 1e-3

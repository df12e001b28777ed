"""benchmarks/faithfulness.py: its measures on hand-made cases, and relprop.attribute = captum DeepLift on a ReLU CNN."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import faith_metrics as fmx  # noqa: E402


def test_energy_pointing_game_counts_positive_relevance_inside_the_box():
    r = np.zeros((10, 10))
    r[2:4, 2:4] = 1.0      # 4 inside
    r[8, 8] = 4.0          # 4 outside
    r[3, 3] = 1.0
    r[0, 0] = -100.0       # negative relevance is ignored
    assert fmx.energy_pointing_game(r, np.array([2, 2, 4, 4])) == pytest.approx(0.5)
    valid = np.ones((10, 10), bool)
    valid[8, 8] = False    # letterbox padding is not counted
    assert fmx.energy_pointing_game(r, np.array([2, 2, 4, 4]), valid) == pytest.approx(1.0)
    assert np.isnan(fmx.energy_pointing_game(-np.ones((4, 4)), np.array([0, 0, 2, 2])))


def test_box_mask_uses_pixel_centres():
    m = fmx.box_mask(np.array([1.0, 0.0, 3.0, 2.0]), (4, 5))
    assert m.sum() == 4 and m[0, 1] and m[1, 2] and not m[0, 3] and not m[2, 1]


def test_auc_trapezoid():
    assert fmx.auc(np.ones(21)) == pytest.approx(1.0)
    assert fmx.auc(np.linspace(1, 0, 21)) == pytest.approx(0.5)
    assert fmx.auc(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.25)


def test_deletion_and_insertion_on_a_linear_score():
    """Score = sum of the pixels of a 2×2 image in 1 channel; x = [4, 3, 2, 1], x0 = 0.  Ranking by the true
    contributions gives the lowest deletion and highest insertion area; the reversed ranking the opposite."""
    x = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    x0 = torch.zeros_like(x)

    def score(batch):
        return batch.flatten(1).sum(1)

    good = fmx.perturbation_curves(score, x, x0, x[0].numpy(), steps=4)
    bad = fmx.perturbation_curves(score, x, x0, -x[0].numpy(), steps=4)
    np.testing.assert_allclose(good["deletion"], [1.0, 0.6, 0.3, 0.1, 0.0])
    np.testing.assert_allclose(good["insertion"], [0.0, 0.4, 0.7, 0.9, 1.0])
    assert good["deletion_auc"] == pytest.approx((0.5 + 0.6 + 0.3 + 0.1 + 0.0) / 4)
    assert good["insertion_auc"] == pytest.approx((0.0 + 0.4 + 0.7 + 0.9 + 0.5) / 4)
    assert good["deletion_auc"] < bad["deletion_auc"] and good["insertion_auc"] > bad["insertion_auc"]
    # deletion and insertion are complementary for an additive score
    np.testing.assert_allclose(np.add(good["deletion"], good["insertion"]), 1.0)


def test_padding_is_never_ranked():
    valid = np.array([[True, False], [True, True]])
    order = fmx.ranking(np.array([[1.0, 9.0], [3.0, 2.0]]), valid)
    assert order.tolist() == [2, 3, 0]


def test_completeness_error():
    assert fmx.completeness_error(0.9, 2.0, 1.0) == pytest.approx(0.1)


def test_relprop_attribute_matches_captum_deeplift_on_a_relu_cnn():
    pytest.importorskip("captum")
    import faith_methods as fm

    torch.set_num_threads(2)
    r = fm.small_cnn_check(seed=0, n=4, k=2, repeats=1, pool=False)
    assert r["deeplift_max_abs_diff"] < 1e-5
    assert r["deepliftshap_max_abs_diff"] < 1e-5
    assert r["relprop_completeness_max"] < 1e-10
    # with max-pools relprop stays complete (captum's max-pool rule differs: reported, not asserted)
    r = fm.small_cnn_check(seed=0, n=4, k=2, repeats=1, pool=True)
    assert r["relprop_completeness_max"] < 1e-10


def test_task_rows_normalise_by_the_difference_from_the_reference():
    """The pose/OBB rows' curves are (f − f(x0)) / (f(x) − f(x0)): an offset in the score (a box coordinate that does
    not fall to 0) changes nothing, and the true ranking beats the reversed one."""
    import faith_tasks

    x = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    x0 = torch.zeros_like(x)
    valid = np.ones((2, 2), bool)

    def score(batch):
        return batch.flatten(1).sum(1) + 100.0

    good = faith_tasks.difference_curves(score, x, x0, x[0].numpy(), valid, steps=4)
    bad = faith_tasks.difference_curves(score, x, x0, -x[0].numpy(), valid, steps=4)
    np.testing.assert_allclose(good["deletion"], [1.0, 0.6, 0.3, 0.1, 0.0])
    np.testing.assert_allclose(good["insertion"], [0.0, 0.4, 0.7, 0.9, 1.0])
    assert good["deletion_auc"] < bad["deletion_auc"] and good["insertion_auc"] > bad["insertion_auc"]


def test_task_rows_rebuild_the_explained_score():
    """faith_tasks.target_score is the score the Explanation explained (pose keypoints: Σ W·pred over the matched
    candidates), and refuses an Explanation whose score it does not reproduce."""
    import dataclasses

    import faith_tasks
    import relprop
    from relprop.image import Letterbox, read_image, to_input

    from tests.tasks_fixtures import task_trace

    ex = relprop.Explainer(task_trace("yolov8n-pose.yaml", 64, torch.float64).with_folded_batchnorm())
    image = read_image((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    lb = Letterbox.fit(image.shape[:2], ex.imgsz)
    x = to_input(image, lb, ex.graph.dtype, ex.graph.device)[0]
    pred = ex.graph.module(x[None])[0][0].detach()
    best = int(pred[4:4 + ex.graph.nc].amax(0).argmax())
    cx, cy, w, h = pred[:4, best].tolist()
    e = ex.explain_box(image, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], target="keypoints", iou=0.5)
    f = faith_tasks.target_score(ex, e, x, lb, 0.5)
    assert float(f(x[None])[0]) == pytest.approx(e.score, rel=1e-9)
    # every keypoint's x, y and visibility of every matched candidate
    assert float(f(x[None])[0]) == pytest.approx(float(pred[4 + ex.graph.nc:, e.candidates].sum()), rel=1e-9)
    with pytest.raises(RuntimeError, match=r"re-built score .* is not the explained"):
        faith_tasks.target_score(ex, dataclasses.replace(e, score=e.score + 1.0), x, lb, 0.5)

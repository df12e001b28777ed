"""A graph that folds the batch into another size (YOLO12's area attention: (B, N, C) -> (B*area, N/area, C)) still
explains a batch against one batch-1 reference, as DetDSHAP's calibration does: the reference is recorded again at
the input's batch, and each image's relevance equals its own explanation alone; the joint graphs (relprop.joint) too."""

from __future__ import annotations

import pytest
import torch

import fxgraph
from relprop.engine import RelevanceGraph

from tests.tasks_fixtures import task_trace

D = torch.float64


@pytest.mark.parametrize("yaml, folds", [("yolo12n.yaml", True), ("yolov8n-pose.yaml", False)])
def test_folds_batch_is_read_from_the_graph(yaml, folds):
    assert fxgraph.folds_batch(task_trace(yaml, 64, D).module) is folds


def test_batch_against_a_batch_one_reference_equals_each_image_alone():
    g = task_trace("yolo12n.yaml", 64, D).with_folded_batchnorm()
    rg = RelevanceGraph(g.module)
    assert rg.folds_batch
    x = torch.rand(3, 3, 64, 64, dtype=D, generator=torch.Generator().manual_seed(0))
    refs = rg.reference(torch.zeros(1, 3, 64, 64, dtype=D))

    def target(outputs):
        return outputs[0][:, 4:, :8].sum((1, 2))[:, None]  # (B, 1): class scores of the first anchors (linear in outputs)

    together = rg.relevance(x, refs, target)  # broadcasting a batch-1 reference over (3*area, ...) failed before
    assert 3 in refs.expanded and refs.expanded[3].batch == 3
    for i in range(3):
        alone = rg.relevance(x[i:i + 1], refs, target)
        torch.testing.assert_close(together.attribution[i], alone.attribution[0], rtol=1e-9, atol=1e-12)
        want = float((together.score[i] - together.reference_score[i]).sum())
        assert float(together.attribution[i].sum()) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_joint_graphs_take_a_batch_one_reference_on_a_folding_graph():
    from relprop.joint import JointRelevance

    rg = RelevanceGraph(task_trace("yolo12n.yaml", 64, D).with_folded_batchnorm().module)
    x = torch.rand(2, 3, 64, 64, dtype=D, generator=torch.Generator().manual_seed(1))
    refs = rg.reference(torch.zeros(1, 3, 64, 64, dtype=D))
    weights = torch.zeros(refs.outputs[0].shape[1:], dtype=D)
    weights[4:, :8] = 1  # the class scores of the first anchors
    joint = JointRelevance(rg)
    got = joint.relevance(x, refs, weights)
    assert joint.failed is None  # the joint graphs ran, not the eager fallback
    want = rg.relevance(x, refs, weights)
    torch.testing.assert_close(got.attribution, want.attribution, rtol=1e-9, atol=1e-12)
    assert float(got.delta.abs().max()) < 1e-9

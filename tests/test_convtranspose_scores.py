"""Every data-driven criterion scores the channels of a ConvTranspose2d (yolov8-seg's `model.22.proto.upsample`):
they feed the mask prototypes, so a zero score would let global ranking cut the layer to `min_channels`."""

from __future__ import annotations

import pytest
import torch
from conftest import random_model

import fxgraph
import pruning
from pruning.criteria import HSIC, DetDSHAP, Taylor
from pruning.criteria.calibration import load_calibration
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

IMGSZ = 64
UPSAMPLE = "model.22.proto.upsample"


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    graph = fxgraph.trace(random_model("yolov8n-seg.yaml"), IMGSZ)  # BN recalibrated: a fresh init's proto
    # branch carries only float rounding (std ~1e-7), which HSIC rightly calls constant
    assert isinstance(graph.model.get_submodule(UPSAMPLE), torch.nn.ConvTranspose2d)
    data = make_shapes_dataset(tmp_path_factory.mktemp("datasets"), ShapesConfig(n_train=8, n_val=4, imgsz=IMGSZ))
    calibration = load_calibration(data, "segment", IMGSZ, 8, batch=4, stride=int(max(graph.stride)))
    coupling = pruning.analyze(graph)
    group = next(g for g in coupling.groups.values() if UPSAMPLE in {p for u in g.units for p, _ in u.sources})
    return graph, coupling, calibration, group


@pytest.mark.parametrize("make, dense", [(Taylor, True), (HSIC, True),
                                         # calib_target=all explains each box's mask too, which the proto feeds
                                         (lambda c: DetDSHAP(c, iou=0.01), True)],
                         ids=["taylor", "hsic", "detdshap"])
def test_every_criterion_gives_convtranspose_channels_a_nonzero_score(seg, make, dense):
    """Every criterion scores (nearly) every channel: Taylor and DetDSHAP above 0; HSIC-Lasso gives a full order
    (its path entry λ > 0, or a KKT gradient ≤ 0 for channels that never enter), never all zero as before
    ConvTranspose2d was hooked, and with some channels in the path."""
    graph, coupling, calibration, group = seg
    scores = make(calibration)(graph, coupling)[group.name]
    if make is HSIC:
        assert (scores > 0).any() and (scores != 0).all() and len(torch.unique(scores)) == len(scores), scores.tolist()
        return
    assert scores.sum() > 0 and (not dense or (scores > 0).float().mean() >= 0.9), scores.tolist()

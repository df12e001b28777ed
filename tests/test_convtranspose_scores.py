"""Every data-driven criterion scores the channels of a ConvTranspose2d (yolov8-seg's `model.22.proto.upsample`):
they feed the mask prototypes, so a zero score would let global ranking cut the layer to `min_channels`."""

from __future__ import annotations

import pytest
import torch
from conftest import cached_trace

import pruning
from pruning.criteria import HSIC, DetDSHAP, Taylor
from pruning.criteria.calibration import load_calibration
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

IMGSZ = 64
UPSAMPLE = "model.22.proto.upsample"


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    graph = cached_trace("yolov8n-seg.yaml", IMGSZ)
    assert isinstance(graph.model.get_submodule(UPSAMPLE), torch.nn.ConvTranspose2d)
    data = make_shapes_dataset(tmp_path_factory.mktemp("datasets"), ShapesConfig(n_train=8, n_val=4, imgsz=IMGSZ))
    calibration = load_calibration(data, "segment", IMGSZ, 8, batch=4, stride=int(max(graph.stride)))
    coupling = pruning.analyze(graph)
    group = next(g for g in coupling.groups.values() if UPSAMPLE in {p for u in g.units for p, _ in u.sources})
    return graph, coupling, calibration, group


@pytest.mark.parametrize("make, dense", [(Taylor, True), (HSIC, False), pytest.param(lambda c: DetDSHAP(c, iou=0.01), True, marks=pytest.mark.xfail(
                             strict=True, reason="DetDSHAP explains boxes and classes only; the proto branch feeds "
                                                 "the masks alone, so no box relevance reaches it (open: issue 17)"))],
                         ids=["taylor", "hsic", "detdshap"])
def test_every_criterion_gives_convtranspose_channels_a_nonzero_score(seg, make, dense):
    """Dense criteria score (nearly) every channel; HSIC-Lasso's λ=0 coefficients are sparse by design (most units
    get exactly 0, issue 17), so it must only see the layer at all (all zero before ConvTranspose2d was hooked)."""
    graph, coupling, calibration, group = seg
    scores = make(calibration)(graph, coupling)[group.name]
    assert scores.sum() > 0 and (not dense or (scores > 0).float().mean() >= 0.9), scores.tolist()

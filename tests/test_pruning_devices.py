"""The job's device setting (ultralytics style) maps to one torch device, used for tracing, scoring and pruning."""

from __future__ import annotations

import pytest
import torch

from pruning.errors import PruningError
from pruning.devices import torch_device


@pytest.mark.parametrize("setting,rank,expected", [
    ("cpu", 0, "cpu"), ("CPU", 3, "cpu"), ("0", 0, "cuda:0"), (1, 0, "cuda:1"), ("cuda:2", 0, "cuda:2"),
    ("cuda", 1, "cuda:1"), ("0,1", 1, "cuda:1"), ("2, 3", 0, "cuda:2"), ("meta", 0, "meta"),
])
def test_ultralytics_device_strings_map_to_one_torch_device(setting, rank, expected):
    assert torch_device(setting, local_rank=rank) == torch.device(expected)


def test_default_device_is_the_gpu_when_present():
    assert torch_device(None, local_rank=0) == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def test_bad_device_is_refused():
    with pytest.raises(PruningError, match="device 'gpu0' is not understood"):
        torch_device("gpu0")



def test_flatgraph_to_moves_the_model_with_the_graph_but_keeps_its_dtype():
    """FlatGraph.to moves both halves of the pair that pruning cuts together; a cast (float64 for explaining)
    applies to the graph module only, so a checkpoint saved from `model` keeps its dtype."""
    import fxgraph

    g = fxgraph.trace("yolov8n.yaml", 64)
    g.to(torch.float64)
    assert {p.dtype for p in g.module.parameters()} == {torch.float64}
    assert {p.dtype for p in g.model.parameters()} == {torch.float32}
    g.to("meta")
    assert {p.device.type for p in g.module.parameters()} == {"meta"}
    assert {p.device.type for p in g.model.parameters()} == {"meta"}
    assert {b.device.type for b in g.model.buffers()} == {"meta"}

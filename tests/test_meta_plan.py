"""Same plan on a simulated device without a GPU (issue 12): the `meta` device holds shapes and no data, so scores
cannot be computed there (every criterion reads values); given the scores computed on the CPU, coupling analysis,
planning and surgery run on meta tensors and give the CPU's plan and the CPU's pruned shapes."""

from __future__ import annotations

import copy
import dataclasses

import pytest

import fxgraph
import pruning
from conftest import cached_trace
from pruning.importance import get_criterion


@pytest.fixture(scope="module")
def graphs() -> tuple[fxgraph.FlatGraph, fxgraph.FlatGraph]:
    cpu = cached_trace("yolov8n.yaml", 64)
    meta = dataclasses.replace(cpu, module=copy.deepcopy(cpu.module), model=copy.deepcopy(cpu.model)).to("meta")
    return cpu, meta


def test_scores_need_data_so_the_meta_device_cannot_compute_them(graphs):
    _, meta = graphs
    assert meta.device.type == "meta" and all(p.is_meta for p in meta.module.parameters())
    with pytest.raises(NotImplementedError):  # a norm on meta has no value to rank by
        get_criterion("l1")(meta, pruning.analyze(meta))


@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_cpu_scores_give_the_same_plan_and_pruned_shapes_on_meta(graphs, ratio):
    cpu, meta = graphs
    coupling_cpu, coupling_meta = pruning.analyze(cpu), pruning.analyze(meta)
    assert coupling_cpu.groups.keys() == coupling_meta.groups.keys()
    assert all([u.sources for u in coupling_cpu.groups[k].units] == [u.sources for u in coupling_meta.groups[k].units]
               for k in coupling_cpu.groups)
    scores = get_criterion("l1")(cpu, coupling_cpu)

    def criterion(graph, coupling):
        return scores

    plan_cpu = pruning.plan(cpu, ratio=ratio, criterion=criterion, coupling=coupling_cpu)
    plan_meta = pruning.plan(meta, ratio=ratio, criterion=criterion, coupling=coupling_meta)
    assert plan_cpu.num_removed > 0 and plan_cpu.remove == plan_meta.remove
    done_cpu, done_meta = pruning.prune(cpu, plan_cpu), pruning.prune(meta, plan_meta)
    assert done_meta.report.params_after == done_cpu.report.params_after < done_cpu.report.params_before
    for which in ("module", "model"):  # FlatGraph.to moves the graph module; the ultralytics model stays put
        sd_cpu = getattr(done_cpu.graph, which).state_dict()
        sd_meta = getattr(done_meta.graph, which).state_dict()
        assert sd_cpu.keys() == sd_meta.keys()
        assert all(sd_meta[k].shape == sd_cpu[k].shape for k in sd_cpu), which
    assert all(t.is_meta for t in done_meta.graph.module.state_dict().values())
    assert all(p.is_meta for p in meta.module.parameters())  # the caller's graph stays on meta

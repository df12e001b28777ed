"""Depth pruning: residual blocks found from the graph, removed exactly when their branch is zero, refused with our
errors where removal is not possible; the library's round_to default."""

from __future__ import annotations

import copy
import functools
import inspect
from pathlib import Path

import pytest
import torch

import fxgraph
import pruning
from conftest import random_model, randomize_batchnorm
from pruning.blocks import BlockError, find_blocks
from pruning.depth import remove_blocks

IMGSZ = 64
ULTRA = Path(__import__("ultralytics").__file__).parent / "cfg" / "models"


@functools.lru_cache(maxsize=None)
def deep_yolo11(folder: str) -> str:
    """yolo11n with depth multiple 1.0 (its widths): C3k2 with n=2 for both c3k settings, C2PSA with 2 PSABlocks."""
    text = (ULTRA / "11" / "yolo11.yaml").read_text()
    line = next(s for s in text.splitlines() if s.strip().startswith("n: ["))
    path = Path(folder) / "yolo11n.yaml"
    path.write_text(text.replace(line, "  n: [1.00, 0.25, 1024]"))
    return str(path)


HEAD_INPUT_YAML = """
nc: 2
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 2, Bottleneck, [32]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
head:
  - [[3, 4, 5], 1, Detect, [nc]]
"""

ZEROED = {  # blocks whose branch is zeroed in the float64 fixtures
    "v8": ["model.4.m.0", "model.4.m.1", "model.6.m.0"],
    "11": ["model.2.m.0", "model.4.m.1", "model.6.m.0.m.1", "model.6.m.1.m.0", "model.10.m.0.attn",
           "model.10.m.1.ffn", "model.10.m.1.attn"],
}


@pytest.fixture(scope="module")
def yaml11(tmp_path_factory) -> str:
    return deep_yolo11(str(tmp_path_factory.mktemp("deep11")))


def zero_branch(model: torch.nn.Module, last_conv: str) -> None:
    """Make a branch's output exactly zero: the BatchNorm after its last conv gets weight and bias 0 (the branch
    ends in SiLU or no activation, both 0 at 0)."""
    bn = model.get_submodule(last_conv.rpartition(".")[0] + ".bn")
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()


@functools.lru_cache(maxsize=None)
def zeroed_graph(yaml: str, key: str) -> fxgraph.FlatGraph:
    model = random_model(yaml)
    randomize_batchnorm(model, torch.Generator().manual_seed(1))
    model = model.double()
    g = fxgraph.trace(model, imgsz=IMGSZ, dtype=torch.float64)
    blocks = find_blocks(g)
    for name in ZEROED[key]:
        zero_branch(g.model, blocks[name].last_conv)
    return fxgraph.trace(g.model, imgsz=IMGSZ, dtype=torch.float64)


@pytest.fixture(scope="module")
def v8() -> fxgraph.FlatGraph:
    return zeroed_graph("yolov8n.yaml", "v8")


@pytest.fixture(scope="module")
def y11(yaml11) -> fxgraph.FlatGraph:
    return zeroed_graph(yaml11, "11")


def removed_outputs(g: fxgraph.FlatGraph, names: list[str]):
    """(reference output, graph output, model output, model) after removing `names` from copies."""
    x = torch.rand(2, 3, IMGSZ, IMGSZ, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = g.module(x)[0]
        gm, model = copy.deepcopy(g.module), copy.deepcopy(g.model).double().eval()
        remove_blocks(gm, model, find_blocks(g), names)
        return ref, gm(x)[0], model(x)[0], model


@pytest.mark.parametrize("names", [["model.4.m.0"], ["model.4.m.1", "model.6.m.0"]])
def test_removing_zeroed_c2f_blocks_is_exact_and_folds_the_concat(v8, names):
    ref, out_graph, out_model, model = removed_outputs(v8, names)
    assert torch.allclose(out_graph, ref, rtol=0, atol=1e-9) and torch.allclose(out_model, ref, rtol=0, atol=1e-9)
    c2f = model.model[4]
    assert type(c2f).__name__ == "C2f" and len(c2f.m) == 1
    assert c2f.cv2.conv.in_channels == (2 + 1) * c2f.c == c2f.cv2.conv.weight.shape[1]  # cv2 reads one block fewer


def test_removing_a_live_block_changes_the_outputs(v8):
    """The exactness above comes from the zero branch: the same removal of a live block is not exact."""
    ref, out_graph, out_model, _ = removed_outputs(v8, ["model.6.m.1"])
    assert (out_graph - ref).abs().max() > 1e-6 and (out_model - ref).abs().max() > 1e-6  # exact ones: <= 1e-9


@pytest.mark.parametrize("names, module, kind, n", [
    (["model.2.m.0"], "model.2", "C3k2", 1),  # c3k=False: Bottlenecks in C2f's concatenated list
    (["model.4.m.1"], "model.4", "C3k2", 1),
    (["model.6.m.0.m.1", "model.6.m.1.m.0"], "model.6.m.0", "C3k", 1),  # c3k=True: Bottlenecks inside C3k.m
    (["model.10.m.0.attn"], "model.10.m.0", "Residual", None),  # PSABlock's attention: x + ffn(x) remains
    (["model.10.m.1.ffn"], "model.10.m.1", "Residual", None),  # PSABlock's FFN: x + attn(x) remains
    (["model.10.m.1.attn", "model.10.m.1.ffn"], "model.10", "C2PSA", 1),  # the whole PSABlock goes
])
def test_removing_zeroed_yolo11_blocks_is_exact(y11, names, module, kind, n):
    ref, out_graph, out_model, model = removed_outputs(y11, names)
    assert torch.allclose(out_graph, ref, rtol=0, atol=1e-9) and torch.allclose(out_model, ref, rtol=0, atol=1e-9)
    part = model.get_submodule(module)
    assert type(part).__name__ == kind
    if n is not None:
        assert len(part.m) == n
    if kind == "C3k2":
        assert part.cv2.conv.in_channels == (2 + n) * part.c


def test_blocks_are_found_from_the_graph_and_only_shortcut_ones(v8, y11):
    assert sorted(b for b, blk in find_blocks(v8).items() if blk.removable) == [
        "model.2.m.0", "model.4.m.0", "model.4.m.1", "model.6.m.0", "model.6.m.1", "model.8.m.0"]
    found = find_blocks(y11)
    assert found["model.10.m.0.attn"].last_conv == "model.10.m.0.attn.proj.conv"
    assert found["model.10.m.0.ffn"].last_conv == "model.10.m.0.ffn.1.conv"
    assert found["model.10.m.0.attn"].module == "model.10.m.0" and found["model.10.m.0.attn"].removable
    assert "model.10.m.0.attn.pe" not in found  # Attention's v + pe(v): pe reads v, not the sum's other operand


def test_refusals_name_the_block(v8, y11, tmp_path):
    with pytest.raises(pruning.EmptyLayerError, match=r"model\.2\.m\.0.*model\.2\.m \(C2f\).*n=0"):
        pruning.plan(v8, blocks=["model.2.m.0"], criterion="l1")
    with pytest.raises(BlockError, match=r"model\.15\.m\.0 \(Bottleneck\) has no shortcut"):
        pruning.plan(v8, blocks=["model.15.m.0"], criterion="l1")
    with pytest.raises(BlockError, match=r"model\.10\.m\.0\.attn\.pe \(Conv\) is not a residual block"):
        pruning.plan(y11, blocks=["model.10.m.0.attn.pe"], criterion="l1")
    with pytest.raises(BlockError, match=r"no module model\.99"):
        pruning.plan(v8, blocks=["model.99"], criterion="l1")
    with pytest.raises(BlockError, match=r"only 2 residual blocks can be removed.*asked for 3"):
        pruning.plan(v8, blocks=3, criterion="l1")
    yaml = tmp_path / "head_input.yaml"
    yaml.write_text(HEAD_INPUT_YAML)
    g = fxgraph.trace(str(yaml), imgsz=IMGSZ)
    with pytest.raises(BlockError, match=r"model\.3\.1 cannot be removed.*input of the head"):
        pruning.plan(g, blocks=["model.3.1"], criterion="l1")
    assert pruning.plan(g, blocks=1, criterion="l1").blocks == ("model.3.0",)


def test_block_plans_rank_by_the_criterion_and_combine_with_channels(v8):
    l1 = pruning.plan(v8, ratio=0.2, blocks=2, criterion="l1")
    assert len(l1.blocks) == 2 and l1.num_removed > 0
    weights = {b: float(v8.model.get_submodule(blk.last_conv).weight.detach().abs().sum())
               for b, blk in find_blocks(v8).items() if blk.removable}
    weakest = min((b for b in weights if b not in ("model.2.m.0", "model.8.m.0")), key=weights.get)
    assert weakest in l1.blocks
    assert pruning.Plan.from_json(l1.to_json()).blocks == l1.blocks
    assert len(pruning.plan(v8, depth_ratio=0.5, criterion="random").blocks) == 1  # half of the 2 that may go
    report = pruning.dry_run(v8, l1)
    assert report.blocks_removed == 2 and report.gflops_after < pruning.dry_run(v8, pruning.plan(
        v8, ratio=0.2, criterion="l1")).gflops_after


def test_depth_pruned_checkpoint_loads_predicts_and_exports_without_the_project(yaml11, tmp_path):
    from conftest import e2e_ready_model
    from test_pruning_io import check_in_fresh_process

    model = e2e_ready_model(yaml11)  # the plain init, as the other fresh-process tests (1e-4 ONNX tolerance)
    cut = pruning.prune(model, imgsz=IMGSZ, ratio=0.2, criterion="l1",
                        blocks=["model.4.m.1", "model.6.m.0.m.1", "model.10.m.0.attn"])
    assert cut.report.blocks_removed == 3
    assert len(cut.model.model[4].m) == 1 and len(cut.model.model[6].m[0].m) == 1
    assert type(cut.model.model[10].m[0]).__name__ == "Residual"
    assert all(str(n).startswith("model.") for n in find_blocks(cut.graph))  # the retrace names the cut model
    check_in_fresh_process(cut, tmp_path / "fresh", "-")


def test_round_to_defaults_to_8_and_widths_follow_it():
    for fn in (pruning.plan, pruning.plan_for_target, pruning.make_plan):
        assert inspect.signature(fn).parameters["round_to"].default == 8, fn.__name__
    text = (Path(__file__).resolve().parents[1] / "default.yaml").read_text()
    assert any(line.split("#")[0].split() == ["round_to:", "8"] for line in text.splitlines())
    g = fxgraph.trace("yolo11n.yaml", imgsz=IMGSZ)
    coupling = pruning.analyze(g)
    chosen = pruning.plan(g, ratio=0.4, criterion="l1", coupling=coupling)
    heads = {n for block, why in coupling.block_reasons.items() for n in block}
    odd = {}
    for name, removed in chosen.remove.items():
        kept = len(coupling.groups[name]) - len(removed)
        if kept % 8 and name not in heads:
            odd[name] = kept
    assert chosen.num_removed > 0 and odd == {}
    exact = pruning.plan(g, ratio=0.4, criterion="l1", coupling=coupling, round_to=1)
    assert any((len(coupling.groups[n]) - len(r)) % 8 for n, r in exact.remove.items())


def test_job_setting_and_step_blocks(v8):
    from pruning.depth_plan import score_with_blocks, step_blocks
    from pruning.job.config import ConfigError

    assert pruning.load_config(None, {"prune_depth": "auto"}).prune_depth == "auto"
    with pytest.raises(ConfigError, match=r"prune_depth='sometimes' is not one of never, auto, only"):
        pruning.load_config(None, {"prune_depth": "sometimes"})
    coupling = pruning.analyze(v8)
    scores = score_with_blocks(v8, coupling, "l1")
    assert sorted(scores.block_scores) == sorted(b for b, blk in find_blocks(v8).items() if blk.removable)
    chosen = step_blocks(v8, scores, 0.1, "all")
    assert len(chosen) == 1 and scores.block_scores[chosen[0]] == min(
        scores.block_scores[b] for b in ("model.4.m.0", "model.4.m.1", "model.6.m.0", "model.6.m.1"))
    with pytest.raises(BlockError, match=r"carry no block scores"):
        step_blocks(v8, dict(scores), 0.1, "all")


def test_plan_for_target_searches_blocks_and_channels(v8):
    only, report = pruning.plan_for_target(v8, 0.02, depth="only", criterion="l1")
    assert only.blocks and only.num_removed == 0 and report.gflops_ratio <= 0.98
    both, report = pruning.plan_for_target(v8, 0.1, depth="auto", criterion="l1")
    assert report.gflops_ratio <= 0.9 and report.blocks_removed == len(both.blocks)
    with pytest.raises(pruning.PlanError, match=r"cannot remove 50.0%.*depth='only'"):
        pruning.plan_for_target(v8, 0.5, depth="only", criterion="l1")
    with pytest.raises(pruning.PlanError, match=r"depth must be"):
        pruning.plan_for_target(v8, 0.5, depth="sometimes")

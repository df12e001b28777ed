"""Pruning inside ultralytics's `Attention` (YOLO11's C2PSA, YOLO26's C2PSA and attention C3k2): key dims shrink
equally in every head (q/k channel pairs), the module's own forward runs unchanged, bad plans name the broken
attention constraint, and the pruned checkpoint loads with plain `YOLO(path)` in a fresh process."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

import fxgraph
import pruning
from pruning import policy, surgery
from pruning.coupling import analyze as analyze_graph
from pruning.errors import PlanError, ProtectedChannelError, SplitConstraintError
from tests.conftest import cached_model, randomize_batchnorm, zero_units

IMGSZ = 64


# ---------------------------------------------------------------------------------------------- PSABlock alone


class PSANet(nn.Module):
    """A stem conv, one ultralytics PSABlock (2 heads, key_dim 32, head_dim 64) and an output conv."""

    def __init__(self) -> None:
        from ultralytics.nn.modules import Conv
        from ultralytics.nn.modules.block import PSABlock

        super().__init__()
        self.stem = Conv(3, 128, 1)
        self.psa = PSABlock(128, attn_ratio=0.5, num_heads=2)
        self.out = nn.Conv2d(128, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.psa(self.stem(x)))


def psa_net() -> tuple[PSANet, torch.fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    net = PSANet().double().eval()
    randomize_batchnorm(net, torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return net, fxgraph.trace_module(net, x), x


def key_dim_plan(coupling, per_head: list[tuple[int, ...]]) -> pruning.Plan:
    (cut,) = coupling.heads.values()
    return pruning.Plan(remove=dict(zip(cut.groups, per_head)))


# key dims cut per head: different indices in each head, the same count (constraint 3)
KEY_CUTS = [[(0,), (31,)], [(1, 5, 7, 20), (0, 2, 30, 31)], [tuple(range(0, 31)), tuple(range(1, 32))]]


@pytest.mark.parametrize("per_head", KEY_CUTS, ids=["1-dim", "4-dims", "31-dims"])
def test_psablock_key_dims_pruned_equal_zeroed(per_head):
    net, gm, x = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    (cut,) = coupling.heads.values()
    assert (cut.layout.num_heads, cut.layout.key_dim, cut.layout.head_dim) == (2, 32, 64)
    plan = key_dim_plan(coupling, per_head)
    zero_units((gm, net), coupling, plan.remove)
    with torch.no_grad():
        before = net(x)
        assert float((gm(x)[0] - before).abs().max()) <= 1e-12
    scale = net.psa.attn.scale
    surgery.apply(gm, net, coupling, plan, sync=policy.sync_modules)
    attn = net.psa.attn
    kd = 32 - len(per_head[0])
    assert (attn.num_heads, attn.key_dim, attn.head_dim, attn.scale) == (2, kd, 64, scale)
    assert attn.qkv.conv.out_channels == attn.qkv.conv.weight.shape[0] == 2 * (2 * kd + 64)  # constraint 1
    with torch.no_grad():
        assert float((net(x) - before).abs().max()) <= 1e-5  # ultralytics's own Attention.forward
        assert float((gm(x)[0] - before).abs().max()) <= 1e-5  # the graph with its baked view/split sizes rewritten
    fast = {n.name: fxgraph.info(n).shape for n in gm.graph.nodes}  # q/k shapes followed by surgery
    surgery.refresh_shapes(gm, x)
    assert fast == {n.name: fxgraph.info(n).shape for n in gm.graph.nodes}


def test_psablock_key_dims_pruned_without_zeroing_change_the_output():
    """The control that shows the equivalence test can fail: the same cut of live q/k pairs moves the output."""
    net, gm, x = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    plan = key_dim_plan(coupling, KEY_CUTS[1])
    with torch.no_grad():
        before = net(x)
    surgery.apply(gm, net, coupling, plan, sync=policy.sync_modules)
    with torch.no_grad():
        assert float((net(x) - before).abs().max()) > 1e-4


def test_q_and_k_channel_j_form_one_unit_and_v_and_stream_are_kept():
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    (cut,) = coupling.heads.values()
    for h, name in enumerate(cut.groups):
        group = coupling.groups[name]
        assert len(group) == 32 and group.prunable
        for j, unit in enumerate(group.units):  # head h's block is [q 0..31, k 32..63, v 64..127] of 128
            outs = sorted(t.index for t in unit.touches if t.param == cut.param and t.role == "out")
            assert outs == [h * 128 + j, h * 128 + 32 + j]
    assert coupling.block_of(cut.groups[0]) == cut.groups
    v = [g for g in coupling.groups.values() if g.name.startswith("psa.attn.qkv") and g.name not in cut.groups]
    assert len(v) == 1 and len(v[0]) == 128 and "attention constraint 4" in v[0].protected
    assert "attention constraint 4" in coupling.groups["stem.conv"].protected  # C of view(B, C, H, W)


def test_without_the_heads_callback_attention_stays_pinned():
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm)
    assert not coupling.heads
    assert all(not g.prunable for g in coupling.groups.values() if g.name.startswith("psa.attn.qkv"))


# ---------------------------------------------------------------------------------------------- bad plans


def test_uneven_heads_are_refused_naming_constraint_3():
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    with pytest.raises(SplitConstraintError, match="attention constraint 3.*same key_dim"):
        surgery.apply(gm, net, coupling, key_dim_plan(coupling, [(0, 1), (0,)]), sync=policy.sync_modules)
    with pytest.raises(SplitConstraintError, match="attention constraint 3"):
        surgery.apply(gm, net, coupling, key_dim_plan(coupling, [(0,), ()]), sync=policy.sync_modules)
    assert net.psa.attn.qkv.conv.weight.shape[0] == 256  # nothing was cut


def test_v_channels_and_the_stream_are_refused_naming_constraint_4():
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    (cut,) = coupling.heads.values()
    (v,) = [n for n in coupling.groups if n.startswith("psa.attn.qkv") and n not in cut.groups]
    for name in (v, "stem.conv"):
        with pytest.raises(ProtectedChannelError, match="attention constraint 4"):
            surgery.apply(gm, net, coupling, pruning.Plan(remove={name: (0,)}))


def test_every_key_dim_removed_is_refused():
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    with pytest.raises(PlanError, match="all 32 channels"):
        surgery.apply(gm, net, coupling, key_dim_plan(coupling, [tuple(range(32))] * 2))


def tampered(coupling, head: int, unit: int, keep):
    """A copy of `coupling` whose q/k unit `unit` of `head` keeps only the qkv touches `keep` selects."""
    coupling = copy.deepcopy(coupling)
    (cut,) = coupling.heads.values()
    u = coupling.groups[cut.groups[head]].units[unit]
    u.touches = tuple(t for t in u.touches if keep(t))
    return coupling, cut


def test_q_channel_without_its_k_partner_is_refused_naming_constraint_2():
    """Units make a plan cut q_j and k_j together; the slices are checked too, whatever built them."""
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    bad, cut = tampered(coupling, 0, 3, lambda t: not (t.index == 32 + 3 and t.role in ("out", "norm", "stat")))
    plan = key_dim_plan(bad, [(3,), (3,)])
    with pytest.raises(PlanError, match="attention constraint 2.*q dims \\[3\\] but k dims \\[\\]"):
        surgery.apply(gm, net, bad, plan)
    assert net.psa.attn.qkv.conv.weight.shape[0] == 256


def test_a_v_slice_is_refused_by_the_slice_check_naming_constraint_4():
    net, gm, _ = psa_net()
    coupling = analyze_graph(gm, heads=policy.attention_heads(net))
    (cut,) = coupling.heads.values()
    drop = surgery.removals(coupling, key_dim_plan(coupling, [(0,), (0,)]))
    drop[cut.param][0] = sorted(drop[cut.param][0] + [64])  # v channel 0 of head 0
    with pytest.raises(PlanError, match="attention constraint 4"):
        surgery.check_heads(coupling, drop)
    drop[cut.param][0] = [0, 32]  # q/k pair 0 of head 0 only
    with pytest.raises(PlanError, match="attention constraint 3.*\\[1, 0\\] key dims per head"):
        surgery.check_heads(coupling, drop)
    drop[cut.param][0] = [0, 32, 300]  # beyond num_heads*(2*key_dim + head_dim)
    with pytest.raises(PlanError, match="attention constraint 1"):
        surgery.check_heads(coupling, drop)


# ---------------------------------------------------------------------------------------------- whole YOLO graphs


def sensitized_graph(name: str) -> fxgraph.FlatGraph:
    model = copy.deepcopy(cached_model(name))
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        head = model.model[-1]
        for branch in list(head.cv2) + list(head.cv3):
            branch[-1].bias.zero_()
    return fxgraph.trace(model, imgsz=IMGSZ, dtype=torch.float64)


def attention_and_random_removal(coupling, seed: int) -> dict[str, tuple[int, ...]]:
    """Random key dims of every attention (different indices per head) plus random units of half the other blocks."""
    rng = random.Random(seed)
    remove = {}
    attention = {n for cut in coupling.heads.values() for n in cut.groups}
    for block in coupling.all_blocks():
        groups = [coupling.groups[n] for n in block]
        if not all(g.prunable for g in groups) or (block[0] not in attention and rng.random() > 0.5):
            continue
        n = rng.randint(1, len(groups[0]) - 1)
        for g in groups:
            remove[g.name] = tuple(sorted(rng.sample(range(len(g)), n)))
    return remove


def outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The eval outputs of every head branch the model has (YOLO26: one-to-many and one-to-one)."""
    branches = [None]
    if hasattr(model.model[-1], "one2one_cv2"):
        branches = ["one2many", "one2one"]
    return [t for b in branches for t in fxgraph.reference_outputs(model, x, branch=b)]


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo26n.yaml"], ids=["yolo11n", "yolo26n"])
def test_yolo_attention_key_dims_pruned_equal_zeroed(name):
    g = sensitized_graph(name)
    coupling = pruning.analyze(g)
    attentions = [m for m in g.model.modules() if type(m).__name__ == "Attention"]
    assert len(coupling.heads) == len(attentions) >= 1  # every Attention is found (YOLO26: C2PSA and C3k2's)
    remove = attention_and_random_removal(coupling, 5)
    zero_units((g.module, g.model), coupling, remove)
    with torch.no_grad():  # YOLO26's one-to-one head holds its own copies of the zeroed filters
        head = g.model.model[-1]
        for o2m, o2o in (("cv2", "one2one_cv2"), ("cv3", "one2one_cv3")):
            if hasattr(head, o2o):
                getattr(head, o2o).load_state_dict(getattr(head, o2m).state_dict())
    x = torch.rand(2, 3, IMGSZ, IMGSZ, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    before = outputs(g.model, x)
    with torch.no_grad():
        graph_before = g.module(x)
    pruned = pruning.prune(g, pruning.Plan(remove=remove))
    kept = {}
    for m_name, m in pruned.model.named_modules():
        if type(m).__name__ == "Attention":
            kept[m_name] = m.key_dim
            assert m.qkv.conv.out_channels == m.num_heads * (2 * m.key_dim + m.head_dim)
            assert m.scale == 32 ** -0.5  # the original scale, not key_dim**-0.5 of the cut module
    assert all(kd < 32 for kd in kept.values()), kept
    after = outputs(pruned.model, x)
    assert max(float((a - b).abs().max()) for a, b in zip(after, before)) <= 1e-5
    with torch.no_grad():
        graph_after = pruned.graph.module(x)
    assert max(float((a - b).abs().max()) for a, b in zip(graph_after, graph_before)) <= 1e-5
    retraced = pruning.analyze(fxgraph.trace(pruned.model, imgsz=IMGSZ, dtype=torch.float64))
    assert sorted(cut.layout.key_dim for cut in retraced.heads.values()) == sorted(kept.values())  # prunable again
    ratios = {cut.layout.module: 0.5 for cut in retraced.heads.values()}
    again = pruning.prune(pruned.graph, layer_ratios=ratios, criterion="l1")  # the cut graph, not a new trace
    assert all(m.key_dim < kept[n] for n, m in again.model.named_modules() if n in kept)
    with torch.no_grad():
        assert max(float((a - b).abs().max())
                   for a, b in zip(again.graph.module(x), fxgraph.reference_outputs(again.model, x))) <= 1e-9


def test_global_plans_cut_every_head_equally():
    g = sensitized_graph("yolo11n.yaml")
    coupling = pruning.analyze(g)
    plan = pruning.plan(g, coupling=coupling, layer_ratios={"model.10.m.0.attn": 0.5}, criterion="l1")
    (cut,) = coupling.heads.values()
    assert [len(plan.remove[n]) for n in cut.groups] == [16, 16]
    assert set(plan.remove) == set(cut.groups)
    plan = pruning.plan(g, coupling=coupling, ratio=0.5, criterion="l2")
    assert len({len(plan.remove.get(n, ())) for n in cut.groups}) == 1


# ---------------------------------------------------------------------------------------------- fresh process


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo26n.yaml"])
def test_attention_pruned_checkpoint_loads_without_the_project(name, tmp_path):
    from tests.test_pruning_io import check_in_fresh_process

    g = fxgraph.trace(name, imgsz=IMGSZ)
    coupling = pruning.analyze(g)
    ratios = {cut.layout.module: 0.5 for cut in coupling.heads.values()}
    cut = pruning.prune(g, pruning.plan(g, coupling=coupling, layer_ratios=ratios, criterion="l1"))
    attentions = [m for m in cut.model.modules() if type(m).__name__ == "Attention"]
    assert attentions and all(m.key_dim == 16 for m in attentions)
    # the plain init: with conftest.e2e_ready_model's recalibrated BN, the attention's large logits put torch and
    # onnxruntime 5e-4 apart (float32 rounding through the softmax), and with the plain init YOLO26's end-to-end
    # top-k picks among tied scores, so only its export and shapes are checked here (values: test_pruning_io)
    check_in_fresh_process(cut, tmp_path / "fresh", "-", e2e_values=False)


# ---------------------------------------------------------------------------------------------- YOLO12's AAttn


@pytest.fixture(scope="module")
def yolo12():
    """A float64 trace of yolo12n and its coupling: 8 AAttn, 4 with area=4, 4 with area=1.  Random BatchNorm, and
    each qkv BN without its offset and 30x its gain: q and k then vary across tokens enough that the softmax is
    neither uniform nor saturated (mean top weight 0.25-0.87 over 4 tokens), so the attention scale matters."""
    model = copy.deepcopy(cached_model("yolo12n.yaml"))
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for m in model.modules():
            if type(m).__name__ == "AAttn":
                m.qkv.bn.running_mean.zero_()
                m.qkv.bn.bias.zero_()
                m.qkv.bn.weight.mul_(30)
    g = fxgraph.trace(model, imgsz=IMGSZ, dtype=torch.float64)
    return g, pruning.analyze(g)


def aattn_removal(coupling, seed: int) -> dict[str, tuple[int, ...]]:
    """Random head dims of every AAttn: the same count in each head's q/k group and v group, other indices."""
    rng = random.Random(seed)
    remove = {}
    for cut in coupling.heads.values():
        n = rng.randint(1, cut.layout.head_dim - 1)
        for name in cut.groups + cut.v_groups:
            remove[name] = tuple(sorted(rng.sample(range(len(coupling.groups[name])), n)))
    return remove


def aattn_sizes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    return {n: (m.num_heads, m.head_dim, m.all_head_dim)
            for n, m in model.named_modules() if type(m).__name__ == "AAttn"}


def zeroed_and_cut(yolo12, remove):
    """(outputs of the zeroed model and graph, the pruned result, its outputs): zero `remove`, then cut it."""
    g, coupling = yolo12
    zeroed = copy.deepcopy(g)
    zero_units((zeroed.module, zeroed.model), coupling, remove)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = outputs(zeroed.model, x) + list(zeroed.module(x))
    pruned = pruning.prune(zeroed, pruning.Plan(remove=remove))
    with torch.no_grad():
        after = outputs(pruned.model, x) + list(pruned.graph.module(x))
    return x, pruned, max(float((a - b).abs().max()) for a, b in zip(after, before))


def test_aattn_heads_keep_q_k_pairs_and_v_dims_in_one_block(yolo12):
    g, coupling = yolo12
    aattns = {n: m for n, m in g.model.named_modules() if type(m).__name__ == "AAttn"}
    assert len(coupling.heads) == len(aattns) == 8 and {m.area for m in aattns.values()} == {1, 4}
    for cut in coupling.heads.values():
        nh, hd = cut.layout.num_heads, cut.layout.head_dim
        assert cut.layout.v_channels and cut.layout.rescale and cut.layout.key_dim == hd
        assert len(cut.groups) == len(cut.v_groups) == nh
        assert set(coupling.block_of(cut.groups[0])) == set(cut.groups + cut.v_groups)
        assert "share one head_dim" in coupling.block_reasons[coupling.block_of(cut.groups[0])]
        m = cut.layout.module
        for h in range(nh):
            qk, v = coupling.groups[cut.groups[h]], coupling.groups[cut.v_groups[h]]
            assert qk.prunable and v.prunable and len(qk) == len(v) == hd
            for j in (0, hd - 1):  # head h's block of qkv rows is [q 0..hd-1, k hd..2hd-1, v 2hd..3hd-1]
                outs = sorted(t.index for t in qk.units[j].touches if t.param == cut.param and t.role == "out")
                assert outs == [h * 3 * hd + j, h * 3 * hd + hd + j]
                touched = {(t.param, t.dim, t.index) for t in v.units[j].touches}
                assert (cut.param, 0, h * 3 * hd + 2 * hd + j) in touched  # v's qkv row
                # v channel (h, j) is stream channel h*hd + j of pe (depthwise: its filter) and of proj's input
                assert {(f"{m}.pe.conv.weight", 0, h * hd + j), (f"{m}.pe.bn.weight", 0, h * hd + j),
                        (f"{m}.proj.conv.weight", 1, h * hd + j)} <= touched
    assert not [grp.name for grp in coupling.groups.values() if "attention constraint 4" in (grp.protected or "")]


@pytest.mark.parametrize("seed", [0, 1])
def test_aattn_head_dims_pruned_equal_zeroed(yolo12, seed):
    g, coupling = yolo12
    remove = aattn_removal(coupling, seed) | attention_and_random_removal(coupling, seed + 10)
    x, pruned, diff = zeroed_and_cut(yolo12, remove)
    assert diff <= 1e-9  # ultralytics's own AAttn.forward and the graph with its baked sizes rewritten
    sizes = aattn_sizes(pruned.model)
    for cut in coupling.heads.values():
        nh, hd = cut.layout.num_heads, cut.layout.head_dim - len(remove[cut.groups[0]])
        m = pruned.model.get_submodule(cut.layout.module)
        assert sizes[cut.layout.module] == (nh, hd, nh * hd) and hd < 32
        assert m.qkv.conv.out_channels == m.qkv.conv.weight.shape[0] == 3 * nh * hd
        assert m.pe.conv.groups == m.pe.conv.out_channels == m.proj.conv.in_channels == nh * hd
    fast = {n.name: fxgraph.info(n).shape for n in pruned.graph.module.graph.nodes}
    surgery.refresh_shapes(pruned.graph.module, x)
    assert fast == {n.name: fxgraph.info(n).shape for n in pruned.graph.module.graph.nodes}
    retraced = pruning.analyze(fxgraph.trace(pruned.model, imgsz=IMGSZ, dtype=torch.float64))
    assert sorted((c.layout.module, c.layout.head_dim) for c in retraced.heads.values()) == \
        sorted((n, s[1]) for n, s in sizes.items())  # prunable again


def test_aattn_cut_without_rescaling_q_changes_the_output(yolo12, monkeypatch):
    """The control for the scale: AAttn recomputes head_dim**-0.5, so without q's sqrt(new/old) the logits move."""
    _, coupling = yolo12
    monkeypatch.setattr(surgery, "rescale_queries", lambda *args: None)
    assert zeroed_and_cut(yolo12, aattn_removal(coupling, 0))[2] > 1e-4


def test_aattn_v_dims_must_go_with_the_key_dims(yolo12):
    g, coupling = yolo12
    cut = next(iter(coupling.heads.values()))
    plan = pruning.Plan(remove={**{n: (0, 1) for n in cut.groups}, **{n: (0,) for n in cut.v_groups}})
    with pytest.raises(SplitConstraintError, match="attention constraint 3.*share one head_dim"):
        surgery.removals(coupling, plan)
    drop = surgery.removals(coupling, pruning.Plan(remove={n: (0,) for n in cut.groups + cut.v_groups}))
    drop[cut.param][0] = [i for i in drop[cut.param][0] if i != 2 * 32]  # head 0 keeps its v dim 0
    with pytest.raises(PlanError, match="share one head_dim.*drops \\[1, 1\\] key dims but \\[0, 1\\] v dims"):
        surgery.check_heads(coupling, drop)


def test_aattn_pruned_checkpoint_loads_without_the_project(tmp_path):
    from tests.test_pruning_io import check_in_fresh_process

    g = fxgraph.trace("yolo12n.yaml", imgsz=IMGSZ)
    coupling = pruning.analyze(g)
    ratios = {cut.layout.module: 0.5 for cut in coupling.heads.values()}
    cut = pruning.prune(g, pruning.plan(g, coupling=coupling, layer_ratios=ratios, criterion="l1"))
    assert set(aattn_sizes(cut.model).values()) == {(2, 16, 32), (4, 16, 64)}
    check_in_fresh_process(cut, tmp_path / "fresh", "-")

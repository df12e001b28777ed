"""Surgery: physically remove the planned channels from the fx GraphModule and the ultralytics model.

A plan becomes a set of (parameter name, dim) -> indices to drop; the same slicing is applied to every module
holding tensors of those names (the GraphModule and the ultralytics model use the same names), then each
ultralytics module's own attributes are synced and the graph's shape metadata is recomputed, so parameter and
FLOP counts (fxgraph.stats) describe the pruned network.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import torch
from torch import fx, nn

from fxgraph import info
from fxgraph.nodeinfo import update
from fxgraph.passes import get_tensor, owner_of

from .coupling import NORM, OUT, Coupling
from .errors import PlanError
from .plans import Plan, check_plan

Removals = dict[str, dict[int, list[int]]]  # parameter name -> dim -> sorted indices to drop


def removals(coupling: Coupling, plan: Plan) -> Removals:
    """Every tensor slice the plan drops, after validating the plan against the coupling."""
    check_plan(plan, coupling)
    drop: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for name, indices in plan.remove.items():
        group = coupling.groups[name]
        for i in indices:
            for t in group.units[i].touches:
                drop[t.param][t.dim].add(t.index)
    out = {p: {d: sorted(ix) for d, ix in dims.items()} for p, dims in drop.items()}
    check_heads(coupling, out)
    return out


def check_heads(coupling: Coupling, drop: Removals) -> None:
    """Raise PlanError naming the attention constraint that the qkv slices of `drop` would break: 1 (whole
    num_heads * (2*key_dim + head_dim) blocks), 2 (q channel j and k channel j go together), 3 (every head loses
    the same key dims' count) or 4 (no v channel goes).  The coupling makes plans satisfy them; this guards the
    slices themselves, whatever built them."""
    for cut in coupling.heads.values():
        layout = cut.layout
        gone = set(drop.get(cut.param, {}).get(0, ()))
        if not gone:
            continue
        nh, kd, per = layout.num_heads, layout.key_dim, layout.per_head
        where = f"{layout.module} ({nh} heads, key_dim {kd}, head_dim {layout.head_dim})"
        outside = sorted(i for i in gone if i >= nh * per)
        if outside:
            raise PlanError(f"attention constraint 1: {where} has num_heads*(2*key_dim + head_dim) = {nh * per} qkv "
                            f"channels; the plan drops channels {outside} beyond them")
        cut_per_head, v_per_head = [], []
        for h in range(nh):
            q = {i - h * per for i in gone if h * per <= i < h * per + kd}
            k = {i - h * per - kd for i in gone if h * per + kd <= i < h * per + 2 * kd}
            v = [i for i in gone if h * per + 2 * kd <= i < (h + 1) * per]
            if v and not layout.v_channels:
                raise PlanError(f"attention constraint 4: the plan drops v channels {v} of {where}; they map onto the "
                                "stream by view(B, C, H, W)")
            v_per_head.append(len(v))
            if q != k:
                raise PlanError(f"attention constraint 2: head {h} of {where} drops q dims {sorted(q)} but k dims "
                                f"{sorted(k)}; q channel j and k channel j share the contraction and go together")
            cut_per_head.append(len(q))
        if len(set(cut_per_head)) > 1:
            raise PlanError(f"attention constraint 3: every head of {where} must keep the same key_dim; the plan "
                            f"drops {cut_per_head} key dims per head")
        if cut_per_head[0] >= kd:
            raise PlanError(f"attention constraint 3: the plan drops every key dim of {where}; keep at least one")
        if layout.v_channels and v_per_head != cut_per_head:
            raise PlanError(f"attention constraint 3: q, k and v of {where} share one head_dim; the plan drops "
                            f"{cut_per_head} key dims but {v_per_head} v dims per head")


def slice_tensors(module: nn.Module, drop: Removals, strict: bool = True) -> None:
    """Replace each named parameter/buffer of `module` by its slice without the dropped indices."""
    for name, dims in drop.items():
        try:
            owner, leaf = owner_of(module, name)
        except AttributeError:
            if strict:
                raise
            continue
        if leaf in owner._parameters and owner._parameters[leaf] is not None:
            old = owner._parameters[leaf]
            new = _keep(old.detach(), dims)
            owner._parameters[leaf] = nn.Parameter(new, requires_grad=old.requires_grad)
        elif leaf in owner._buffers and owner._buffers[leaf] is not None:
            owner._buffers[leaf] = _keep(owner._buffers[leaf], dims)
        elif strict:
            raise KeyError(f"{type(module).__name__} has no tensor named {name}")


def _keep(tensor: torch.Tensor, dims: dict[int, list[int]]) -> torch.Tensor:
    for dim, drop in dims.items():
        mask = torch.ones(tensor.shape[dim], dtype=torch.bool)
        mask[drop] = False
        tensor = tensor.index_select(dim, mask.nonzero().flatten().to(tensor.device))
    return tensor.contiguous()


class ShapeRefresh(fx.Interpreter):
    """Run the graph once on meta tensors (shapes only, no arithmetic) and write each node's new `shape` and
    `channels` into its NodeInfo.

    The batch dimension keeps its symbolic `None`; the export's fake value `val`, now stale, is dropped.
    Parameter nodes get their tensor's shape, which is what fxgraph.stats reads for FLOPs.
    """

    def fetch_attr(self, target: str) -> Any:
        value = super().fetch_attr(target)
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            facts = info(n)
            old = facts.shape
            shape = tuple(result.shape)
            if n.op != "get_attr" and old is not None and len(old) == len(shape) and old[0] is None:
                shape = (None, *shape[1:])
            channels = facts.channels
            if n.op != "get_attr" and channels is not None and len(shape) >= 2:
                channels = shape[1]
            update(n, shape=shape, channels=channels)
            n.meta.pop("val", None)
        return result


def refresh_shapes(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Recompute every node's shape metadata from one shape-only run on `example` (moved to the meta device)."""
    with torch.no_grad():
        ShapeRefresh(gm).run(example.to("meta"))


def update_shapes(gm: fx.GraphModule, coupling: Coupling, plan: Plan) -> None:
    """Set each node's new channel count from the coupling (only channel dimensions change when channels are
    cut), and each parameter node's shape from its tensor: the cheap equivalent of `refresh_shapes`."""
    removed = {(name, i) for name, indices in plan.remove.items() for i in indices}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = get_tensor(gm, node.target)
            if isinstance(value, torch.Tensor):
                update(node, shape=tuple(value.shape))
                node.meta.pop("val", None)
            continue
        units = coupling.channels.get(node.name)
        shape = info(node).shape
        if units is None or shape is None or len(shape) < 2:
            continue
        channels = sum(1 for u in units if u not in removed)
        update(node, shape=(shape[0], channels, *shape[2:]), channels=channels)
        node.meta.pop("val", None)


def resize_splits(gm: fx.GraphModule, coupling: Coupling, plan: Plan) -> None:
    """Rewrite the sizes baked into each channel `split_with_sizes` (C2PSA's `split((c, c))`) to the channels
    each part keeps, so the graph runs like the module's own forward after `c` is resynced."""
    removed = {(name, i) for name, indices in plan.remove.items() for i in indices}
    for node in gm.graph.nodes:
        if getattr(node.target, "overloadpacket", None) is not torch.ops.aten.split_with_sizes:
            continue
        units = coupling.channels.get(node.args[0].name)
        sizes = node.args[1]
        if units is None or not isinstance(sizes, (list, tuple)) or sum(sizes) != len(units):
            continue
        new, start = [], 0
        for size in sizes:
            new.append(sum(1 for u in units[start : start + size] if u not in removed))
            start += size
        node.args = (node.args[0], new, *node.args[2:])


def resize_heads(gm: fx.GraphModule, coupling: Coupling, plan: Plan) -> None:
    """Rewrite the sizes baked into each attention's qkv reshape and q/k/v split (pruning.coupling.HeadLayout) to
    the key_dim each head keeps, so the graph runs like `Attention.forward` after `key_dim` is resynced; the shape
    metadata of the q/k path follows (the stream's widths do not change)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, cut in coupling.heads.items():
        r = len(plan.remove.get(cut.groups[0], ()))
        node = nodes.get(name)
        if r == 0 or node is None or cut.layout.v_channels:  # v_channels: resize_channels_last
            continue
        kd, hd = cut.layout.key_dim, cut.layout.head_dim
        new_kd = kd - r
        sizes = list(node.args[1])
        sizes[2] = 2 * new_kd + hd
        node.args = (node.args[0], sizes, *node.args[2:])
        _set_dim(node, 2, 2 * new_kd + hd)
        for split in list(node.users):
            if getattr(split.target, "overloadpacket", None) is torch.ops.aten.split_with_sizes \
                    and list(split.args[1]) == [kd, kd, hd]:
                split.args = (split.args[0], [new_kd, new_kd, hd], *split.args[2:])
                for part in list(split.users):
                    if part.args[1] in (0, 1):  # q and k: their key_dim axis shrinks along the way to the matmul
                        _follow_key_dim(part, 2, new_kd)


def resize_channels_last(gm: fx.GraphModule, coupling: Coupling, plan: Plan) -> bool:
    """Rewrite the sizes baked into an attention that cuts v too (`HeadLayout.v_channels`, YOLO12's AAttn): in
    every reshape of the module that follows its qkv map, the channels-last width (num_heads*(2*key_dim+head_dim),
    one head's 2*key_dim+head_dim, or v's num_heads*head_dim) and the q/k/v split sizes shrink to what each head
    keeps; with `rescale`, the softmax scale baked as key_dim**-0.5 becomes new_key_dim**-0.5, as the module's
    forward recomputes it (q was rescaled to match, `rescale_queries`).  True if anything changed."""
    nodes = {n.name: n for n in gm.graph.nodes}
    changed = False
    for name, cut in coupling.heads.items():
        layout, entry = cut.layout, nodes.get(name)
        r = len(plan.remove.get(cut.groups[0], ()))
        if not layout.v_channels or r == 0 or entry is None:
            continue
        nh, kd, hd = layout.num_heads, layout.key_dim, layout.head_dim
        new_kd, new_hd = kd - r, hd - r
        new_per = 2 * new_kd + new_hd
        widths = {nh * layout.per_head: nh * new_per, layout.per_head: new_per, nh * hd: nh * new_hd}
        for node in _region(entry, layout.module):
            packet = getattr(node.target, "overloadpacket", None)
            if packet in (torch.ops.aten.reshape, torch.ops.aten.view) and isinstance(node.args[1], (list, tuple)):
                sizes = list(node.args[1])
                if isinstance(sizes[-1], int) and sizes[-1] in widths:
                    sizes[-1] = widths[sizes[-1]]
                    node.args = (node.args[0], sizes, *node.args[2:])
            elif packet is torch.ops.aten.split_with_sizes and list(node.args[1]) == [kd, kd, hd]:
                node.args = (node.args[0], [new_kd, new_kd, new_hd], *node.args[2:])
            elif layout.rescale and info(node).kind == "mul":
                node.args = tuple(new_kd ** -0.5 if isinstance(a, float) and math.isclose(a, kd ** -0.5) else a
                                  for a in node.args)
        changed = True
    return changed


def _region(entry: fx.Node, module: str) -> list[fx.Node]:
    """The nodes of `module`'s own forward reachable from `entry` (not entering its submodules' convs), in order."""
    seen, todo = {entry}, [entry]
    while todo:
        for user in todo.pop().users:
            if user not in seen and info(user).module_path == module:
                seen.add(user)
                todo.append(user)
    return [n for n in entry.graph.nodes if n in seen]


def rescale_queries(modules: list[nn.Module], coupling: Coupling, plan: Plan) -> None:
    """Scale the kept q channels of each cut attention whose forward recomputes its scale (`HeadLayout.rescale`)
    by sqrt(new_key_dim / key_dim): then (q * s) . k * new_key_dim**-0.5 = q . k * key_dim**-0.5, the logits the
    uncut module computed.  The scaled tensors are the last affine op of q's channels: its BatchNorm's weight and
    bias, or without one its conv's weight and bias; each tensor is scaled once."""
    for cut in coupling.heads.values():
        layout = cut.layout
        r = len(plan.remove.get(cut.groups[0], ()))
        if not layout.rescale or r == 0:
            continue
        new_kd = layout.key_dim - r
        new_per = 2 * new_kd + (layout.head_dim - r if layout.v_channels else layout.head_dim)
        touches = coupling.groups[cut.groups[0]].units[0].touches
        affine = {t.param for t in touches if t.role == NORM} or {t.param for t in touches if t.role == OUT}
        rows = torch.tensor([h * new_per + j for h in range(layout.num_heads) for j in range(new_kd)])
        factor = math.sqrt(new_kd / layout.key_dim)
        done: set[int] = set()
        for module in modules:
            for name in sorted(affine):
                tensor = get_tensor(module, name)
                if id(tensor) in done:
                    continue
                done.add(id(tensor))
                with torch.no_grad():
                    tensor[rows.to(tensor.device)] *= factor


def refresh_from_input(gm: fx.GraphModule) -> None:
    """`refresh_shapes` on a batch of one of the graph's own input shape and parameter dtype."""
    (placeholder, *_) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    shape = [1 if d is None else d for d in info(placeholder).shape]
    dtype = next((p.dtype for p in gm.parameters() if p.is_floating_point()), torch.float32)
    refresh_shapes(gm, torch.empty(shape, dtype=dtype, device="meta"))


def _set_dim(node: fx.Node, dim: int, size: int) -> None:
    shape = info(node).shape
    if shape is not None and len(shape) > dim:
        update(node, shape=(*shape[:dim], size, *shape[dim + 1 :]))
        node.meta.pop("val", None)


def _follow_key_dim(node: fx.Node, dim: int, size: int) -> None:
    """Set axis `dim` of `node`'s shape to `size` and follow it through scaling and transposes up to the matmul."""
    _set_dim(node, dim, size)
    for user in list(node.users):
        kind = info(user).kind
        if kind in ("mul", "div") and all(not isinstance(a, fx.Node) or a is node for a in user.args):
            _follow_key_dim(user, dim, size)
        elif getattr(user.target, "overloadpacket", None) is torch.ops.aten.transpose:
            rank = len(info(node).shape or ())
            a, b = (int(d) % rank for d in user.args[1:3])
            _follow_key_dim(user, b if dim == a else a if dim == b else dim, size)


def regroup_depthwise(gm: fx.GraphModule) -> None:
    """Set the `groups` baked into each depthwise conv call (YOLO11's DWConv) to its sliced weight's filter count:
    coupling lets a depthwise conv pass channel i to channel i, so its groups shrink with its channels."""
    for node in gm.graph.nodes:
        packet = getattr(node.target, "overloadpacket", None)
        position = {torch.ops.aten.convolution: 8, torch.ops.aten.conv2d: 6}.get(packet)
        if position is None or len(node.args) <= position or int(node.args[position]) == 1:
            continue
        weight = node.args[1]
        if not isinstance(weight, fx.Node) or weight.op != "get_attr":
            continue
        value = get_tensor(gm, weight.target)
        if value.shape[1] == 1 and int(node.args[position]) != value.shape[0]:  # depthwise, now narrower
            args = list(node.args)
            args[position] = value.shape[0]
            node.args = tuple(args)


def apply(gm: fx.GraphModule, model: nn.Module | None, coupling: Coupling, plan: Plan,
          sync: Callable[[nn.Module], None] | None = None,
          mirror: Callable[[Removals, nn.Module], Removals] | None = None) -> None:
    """Cut `plan` from the GraphModule (and from the ultralytics `model`, if given), in place; then `sync(model)`
    lets the model's policy update the module attributes that record channel counts (e.g. C2f's `c`), and
    `mirror(drop, model)` adds the slices of model parts the trace did not run (YOLO26's other head branch)."""
    drop = removals(coupling, plan)
    slice_tensors(gm, mirror(drop, gm) if mirror is not None else drop)  # the export keeps unused branches' tensors
    resize_splits(gm, coupling, plan)
    resize_heads(gm, coupling, plan)
    channels_last = resize_channels_last(gm, coupling, plan)
    regroup_depthwise(gm)
    gm.recompile()
    update_shapes(gm, coupling, plan)
    if channels_last:  # widths inside the attention are not dim 1: recompute them all (a shape-only run)
        refresh_from_input(gm)
    if model is not None:
        slice_tensors(model, mirror(drop, model) if mirror is not None else drop)
    rescale_queries([gm] + ([model] if model is not None else []), coupling, plan)
    if model is not None and sync is not None:
        sync(model)

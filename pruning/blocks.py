"""Residual blocks of a traced model: branches added to their own input, read from the fx graph.

A residual block is an `add` node `a = x + f(x)` whose branch `f` (every node between `x` and `f`'s output) reads
nothing but `x` and its own parameters, is read by nothing but `a`, and whose nodes all come from one module
(its module path, from each node's NodeInfo).  The module `M` that performs the add is removed or rewritten when
blocks go, so `M` must consist of nothing but a chain of such residual branches (`x1 = x + f1(x); x2 = x1 +
f2(x1)`): ultralytics's shortcut `Bottleneck` (C2f, C3k2, C3k, C2fCIB's CIB) holds one, PSABlock two (its
attention and FFN).  `M` must sit in a ModuleList/Sequential block list other than the model's own layer
sequence.  Found generically from the graph: no code path per module family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import fx, nn

import fxgraph
from fxgraph import info, ops

from .errors import BlockError

__all__ = ["BlockError", "ResidualBlock", "block_scores", "branch_nodes", "find_blocks", "reader_conv"]


@dataclass(frozen=True)
class ResidualBlock:
    """One residual branch of the traced graph and why it may or may not be removed.

    name       module path of the branch ('model.2.m.0' for a Bottleneck, 'model.10.m.0.attn' for PSABlock's attention)
    module     the module performing the add ('model.2.m.0', 'model.10.m.0'); dropped once all its branches go
    container  the block list holding `module` ('model.2.m'), and `index` its position there
    add        the add node's name; `output` the branch's last node; `last_conv` the branch's last conv module path
    layer      ultralytics layer index; `channels` the stream's width
    reason     None when removable, else why not (in the user's terms)
    """

    name: str
    module: str
    container: str
    index: int
    add: str
    output: str
    last_conv: str | None
    layer: int | None
    channels: int | None
    reason: str | None = None
    container_size: int = 0  # modules in the block list (n of a C2f)

    @property
    def removable(self) -> bool:
        return self.reason is None


def _common_path(paths: Iterable[str]) -> str:
    """The longest dotted module path that every one of `paths` lies under."""
    common: list[str] | None = None
    for path in paths:
        parts = path.split(".") if path else []
        if common is None:
            common = parts
            continue
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
    return ".".join(common or [])


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def branch_nodes(add: fx.Node, x: fx.Node, out: fx.Node) -> list[fx.Node] | None:
    """The nodes of `out`'s branch back to `x` (parameters excluded), or None unless it reads only `x` and params."""
    seen: dict[fx.Node, None] = {}
    stack, reached = [out], False
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen[node] = None
        for arg in node.all_input_nodes:
            if arg is x:
                reached = True
            elif arg.op == "get_attr" or info(arg).kind in ops.NON_DATA:
                continue  # parameters, constants and symbolic sizes (the batch size of a view) are not data
            elif arg.op == "placeholder":
                return None
            else:
                stack.append(arg)
    if not reached:
        return None
    nodes = list(seen)
    members = set(nodes) | {add}
    for node in nodes:
        if any(u not in members for u in node.users):
            return None
    return nodes


def find_blocks(graph: fxgraph.FlatGraph) -> dict[str, ResidualBlock]:
    """Every residual branch of `graph`, by branch name, removable or not (`reason` says why not)."""
    gm, model = graph.module, graph.model
    head = graph.facts.head_layer if graph.facts is not None else None
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    found: list[tuple[fx.Node, fx.Node, fx.Node, list[fx.Node], str]] = []
    for node in gm.graph.nodes:
        if info(node).kind != "add" or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
            continue
        for x, out in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
            nodes = branch_nodes(node, x, out)
            if nodes:
                path = _common_path(info(n).module_path for n in nodes)
                if path and _under(path, info(node).module_path or "\0"):
                    found.append((node, x, out, sorted(nodes, key=order.__getitem__), path))
                break
    by_module: dict[str, list] = {}
    for item in found:
        by_module.setdefault(info(item[0]).module_path, []).append(item)
    blocks: dict[str, ResidualBlock] = {}
    for module_path, items in by_module.items():
        reason = _module_reason(gm, model, module_path, items, head)
        container, _, index = module_path.rpartition(".")
        try:
            size = len(model.get_submodule(container))
        except (AttributeError, TypeError):
            size = 0
        for add, x, out, nodes, path in items:
            convs = [n for n in nodes if info(n).kind == "conv"]
            why = reason or _head_reason(add, head)
            blocks[path] = ResidualBlock(
                name=path, module=module_path, container=container, index=int(index) if index.isdigit() else -1,
                add=add.name, output=out.name, last_conv=info(convs[-1]).module_path if convs else None,
                layer=info(add).layer, channels=info(add).channels, reason=why, container_size=size)
    return blocks


def _module_reason(gm: fx.GraphModule, model: nn.Module, module_path: str, items: list, head: int | None) -> str | None:
    """Why the residual branches of `module_path` cannot be removed, or None."""
    try:
        module = model.get_submodule(module_path)
    except AttributeError:
        return f"{module_path} is not a module of the model"
    kind = type(module).__name__
    container_path, _, index = module_path.rpartition(".")
    container = model.get_submodule(container_path) if container_path else None
    if not index.isdigit() or not isinstance(container, (nn.ModuleList, nn.Sequential)):
        return f"{module_path} ({kind}) is not an element of a block list (ModuleList/Sequential)"
    if container is getattr(model, "model", None):
        return (f"{module_path} ({kind}) is a layer of the model's own sequence: later layers refer to it by index, "
                "so it is not removed")
    members = {n for item in items for n in item[3]} | {item[0] for item in items}
    own = [n for n in gm.graph.nodes if n.op != "get_attr" and _under(info(n).module_path, module_path)]
    extra = [n.name for n in own if n not in members]
    if extra:
        return (f"{module_path} ({kind}) computes more than residual branches (e.g. {extra[0]}); removing a branch "
                "would not leave a module of its own kind")
    adds = sorted((item[0] for item in items), key=lambda n: list(gm.graph.nodes).index(n))
    for first, second in zip(adds, adds[1:]):
        if first not in second.args:
            return f"{module_path} ({kind}): its residual branches are not a chain"
    for item in items:
        fold = _fold_problem(item[0], item[1])
        if fold:
            return f"{module_path} ({kind}): {fold}"
    return None


def _head_reason(add: fx.Node, head: int | None) -> str | None:
    for user in add.users:
        if user.op == "output" or (head is not None and info(user).layer == head):
            return f"its output {add.name} is an input of the head (layer {head}); the head's inputs are kept"
    return None


def _fold_problem(add: fx.Node, x: fx.Node) -> str | None:
    """Why a concatenation reading both the block's output and its input cannot be folded into its one conv."""
    for user in add.users:
        if info(user).kind != "cat" or x not in user.args[0]:
            continue
        if (user.args[1] if len(user.args) > 1 else 0) not in (1, -3):
            return f"{user.name} concatenates its output along a dimension other than channels"
        conv = reader_conv(user)
        if conv is None:
            return f"{user.name} concatenates its output and is read by something other than one conv"
    return None


def reader_conv(cat: fx.Node) -> fx.Node | None:
    """The one conv (groups 1) reading concatenation `cat`, or None."""
    users = list(cat.users)
    if len(users) != 1 or info(users[0]).kind != "conv" or users[0].args[0] is not cat:
        return None
    conv = users[0]
    groups = conv.args[6] if len(conv.args) > 6 else conv.kwargs.get("groups", 1)
    weight = conv.args[1]
    if groups != 1 or not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return None
    return conv


def block_scores(graph: fxgraph.FlatGraph, blocks: Iterable[ResidualBlock], criterion: object,
                 stats: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Score of each block (higher = keep): Σ of a per-filter statistic over its branch's last conv's filters.

    `stats` (conv module path -> one value per filter, e.g. DetDSHAP's |relevance| or Taylor's |a·∂L/∂a| from the
    criterion's own calibration pass) when given; else by `criterion`'s name: 'l1'/'l2' the Lp magnitude of the
    last conv's filters (Σ_f ||W_f||_p^p), 'random' a seeded uniform draw.
    """
    blocks = list(blocks)
    name = getattr(criterion, "name", criterion if isinstance(criterion, str) else type(criterion).__name__)
    if stats is None and name == "random":
        gen = torch.Generator().manual_seed(getattr(criterion, "seed", 0))
        draws = torch.rand(len(blocks), generator=gen, dtype=torch.float64)
        return {b.name: float(v) for b, v in zip(blocks, draws)}
    out: dict[str, float] = {}
    for block in blocks:
        if block.last_conv is None:
            raise BlockError(f"block {block.name} has no conv to score")
        if stats is not None:
            values = stats.get(block.last_conv)
            out[block.name] = float(values.double().sum()) if values is not None else 0.0
            continue
        p = {"l1": 1, "l2": 2}.get(str(name))
        if p is None:
            raise BlockError(f"criterion {name!r} has no block score: use l1, l2, random, or one with per-filter "
                             "statistics (detdshap, taylor)")
        weight = graph.model.get_submodule(block.last_conv).weight.detach().double()
        out[block.name] = float(weight.abs().pow(p).sum())
    return out

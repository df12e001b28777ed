"""Depth surgery: remove residual blocks (pruning.blocks) from the fx graph and from the ultralytics model.

A removed block `a = x + f(x)` becomes the identity `a = x`, which is exact when the branch `f` is zero.  Where a
concatenation reads both `x` and `a` (C2f and C3k2 concatenate every block's output into `cv2`), the columns of
the reading conv's weight that read `a` are added onto those that read `x` and then dropped, so the conv's input
channels shrink and the result is unchanged.  In the model, a module whose branches all go is deleted from its
block list (`C2f.m` gets shorter: ultralytics's own class with one block fewer); a module losing some of several
chained branches (PSABlock's attention or FFN) is replaced by ultralytics's `Residual` around each kept branch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import torch
from torch import fx, nn

from fxgraph import info
from fxgraph.nodeinfo import update
from fxgraph.passes import get_tensor, owner_of

from .blocks import BlockError, ResidualBlock, branch_nodes, reader_conv
from .errors import EmptyLayerError


def check_removal(blocks: dict[str, ResidualBlock], names: Iterable[str], model: nn.Module) -> list[ResidualBlock]:
    """The blocks called `names`, after refusing (our errors, naming the block) any that is unknown, has no shortcut,
    is not removable, or whose removal would leave its block list empty (n = 0)."""
    chosen: list[ResidualBlock] = []
    for name in dict.fromkeys(names):
        block = blocks.get(name)
        if block is None:
            raise BlockError(_not_a_block(name, model, blocks))
        if block.reason is not None:
            raise BlockError(f"block {name} cannot be removed: {block.reason}")
        chosen.append(block)
    gone = _modules_removed(blocks, chosen)
    per_container: dict[str, list[str]] = defaultdict(list)
    for module in gone:
        per_container[blocks_by_module(blocks)[module][0].container].append(module)
    for container, modules in per_container.items():
        first = blocks_by_module(blocks)[modules[0]][0]
        size = first.container_size
        if len(modules) >= size:
            owner = container.rpartition(".")[0]
            kind = _kind(model, owner)
            raise EmptyLayerError(f"removing block(s) {sorted(b.name for b in chosen if b.module in modules)} would "
                                  f"leave {container} ({kind}) with no block (n=0); keep at least one of its {size}")
    return chosen


def _kind(model: nn.Module, path: str) -> str:
    try:
        return type(model.get_submodule(path)).__name__
    except AttributeError:
        return "module"


def _not_a_block(name: str, model: nn.Module, blocks: dict[str, ResidualBlock]) -> str:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        near = [b for b in blocks if b.startswith(name.rpartition(".")[0])][:3]
        return f"no module {name} in the model" + (f"; residual blocks nearby: {near}" if near else "")
    kind = type(module).__name__
    if getattr(module, "add", None) is False:
        return (f"{name} ({kind}) has no shortcut (add=False): without a residual connection its removal would "
                "not be the identity, so it is not removable")
    return f"{name} ({kind}) is not a residual block: no add of a branch to its own input was traced there"


def blocks_by_module(blocks: dict[str, ResidualBlock]) -> dict[str, list[ResidualBlock]]:
    out: dict[str, list[ResidualBlock]] = defaultdict(list)
    for block in blocks.values():
        out[block.module].append(block)
    return out


def _modules_removed(blocks: dict[str, ResidualBlock], chosen: list[ResidualBlock]) -> list[str]:
    """Modules all of whose residual branches are chosen (they disappear from their block list)."""
    names = {b.name for b in chosen}
    return [m for m, bs in blocks_by_module(blocks).items() if all(b.name in names for b in bs)]


def remove_blocks(gm: fx.GraphModule, model: nn.Module | None, blocks: dict[str, ResidualBlock],
                  names: Iterable[str]) -> list[ResidualBlock]:
    """Remove the blocks `names` from `gm` (in place) and, if given, from `model` (in place).

    `blocks` must have been found on `gm` (pruning.blocks.find_blocks).  Afterwards `gm`'s parameter counts and
    shapes (fxgraph.stats) describe the smaller network; its nodes keep their old module paths, so trace the model
    again before planning on it.  Returns the removed blocks."""
    chosen = check_removal(blocks, names, model if model is not None else nn.Module())
    nodes = {n.name: n for n in gm.graph.nodes}
    for block in chosen:
        _remove_from_graph(gm, model, nodes[block.add], nodes[block.output])
    gm.graph.lint()
    gm.recompile()
    if model is not None:
        _remove_from_model(model, blocks, chosen)
    return chosen


def _remove_from_graph(gm: fx.GraphModule, model: nn.Module | None, add: fx.Node, out: fx.Node) -> None:
    x = add.args[0] if add.args[1] is out else add.args[1]
    branch = branch_nodes(add, x, out)
    if branch is None:
        raise BlockError(f"{add.name}: its branch no longer reads only its input; find the blocks again")
    for user in list(add.users):
        if info(user).kind == "cat" and x in user.args[0]:
            _fold(gm, model, user, x, add)
    add.replace_all_uses_with(x)
    params = [a for n in branch for a in n.all_input_nodes if a.op == "get_attr"]
    gm.graph.erase_node(add)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in sorted(branch, key=order.__getitem__, reverse=True):  # consumers before producers
        gm.graph.erase_node(node)
    for p in dict.fromkeys(params):
        if not p.users:
            owner, leaf = owner_of(gm, p.target)
            gm.graph.erase_node(p)
            if hasattr(owner, leaf):
                delattr(owner, leaf)


def _fold(gm: fx.GraphModule, model: nn.Module | None, cat: fx.Node, x: fx.Node, add: fx.Node) -> None:
    """Add the weight columns of `cat`'s reader that read `add` onto those reading `x`, drop them and `add` from
    the concatenation: exact once `add` equals `x`."""
    pieces = list(cat.args[0])
    offsets, start = [], 0
    for piece in pieces:
        offsets.append(start)
        start += info(piece).channels
    ix, ia = pieces.index(x), pieces.index(add)
    width = info(add).channels
    conv = reader_conv(cat)
    if conv is None:
        raise BlockError(f"{cat.name} concatenates {add.name} and is read by something other than one conv")
    weight = conv.args[1]
    sx = slice(offsets[ix], offsets[ix] + width)
    sa = list(range(offsets[ia], offsets[ia] + width))
    for module in (gm, model):
        if module is None:
            continue
        owner, leaf = owner_of(module, weight.target)
        old = getattr(owner, leaf)
        with torch.no_grad():
            new = old.detach().clone()
            new[:, sx] += new[:, sa]
            keep = torch.tensor([i for i in range(new.shape[1]) if i not in set(sa)], device=new.device)
            new = new.index_select(1, keep).contiguous()
        owner._parameters[leaf] = nn.Parameter(new, requires_grad=old.requires_grad)
        if isinstance(owner, nn.Conv2d):
            owner.in_channels = new.shape[1] * owner.groups
    cat.args = ([p for i, p in enumerate(pieces) if i != ia], *cat.args[1:])
    shape = info(cat).shape
    if shape is not None:
        update(cat, shape=(shape[0], shape[1] - width, *shape[2:]), channels=(info(cat).channels or 0) - width)
    update(weight, shape=tuple(get_tensor(gm, weight.target).shape))
    cat.meta.pop("val", None)
    weight.meta.pop("val", None)


def _remove_from_model(model: nn.Module, blocks: dict[str, ResidualBlock], chosen: list[ResidualBlock]) -> None:
    """Delete modules whose branches all go from their block list; wrap the kept branches of the others."""
    names = {b.name for b in chosen}
    touched = sorted({b.module for b in chosen}, key=lambda m: (m.rpartition(".")[0], -int(m.rpartition(".")[2])))
    for module_path in touched:  # descending index within each block list, so earlier indices stay valid
        mine = blocks_by_module(blocks)[module_path]
        container = model.get_submodule(mine[0].container)
        index = mine[0].index
        kept = [b for b in mine if b.name not in names]
        if not kept:
            del container[index]
            continue
        wrapped = [_residual(model.get_submodule(b.name)) for b in kept]
        container[index] = wrapped[0] if len(wrapped) == 1 else nn.Sequential(*wrapped)


def _residual(branch: nn.Module) -> nn.Module:
    """ultralytics's `Residual` (forward x + m(x)) around `branch`, without its initialiser (which zeroes `m.w3`)."""
    from ultralytics.nn.modules.block import Residual

    wrapper = Residual.__new__(Residual)
    nn.Module.__init__(wrapper)
    wrapper.m = branch
    return wrapper

"""Small rewriting passes over an annotated flat graph."""

from __future__ import annotations

import torch
from torch import fx

from .nodeinfo import info, update


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold every eval-mode BatchNorm that follows a conv (its only user) into that conv's weight and bias.

    The folded conv keeps the conv's node and parameter names; its new bias is registered as `<conv>.bias`.
    Outputs are unchanged up to rounding.  The module is changed in place and returned.
    """
    graph = gm.graph
    for bn in list(graph.nodes):
        if info(bn).kind != "batchnorm":
            continue
        conv = bn.args[0]
        if info(conv).kind != "conv" or len(conv.users) != 1:
            continue
        if bn.target is not torch.ops.aten.batch_norm.default:
            continue
        _, gamma, beta, mean, var, _training, _momentum, eps = bn.args[:8]
        w_node = conv.args[1]
        b_node = conv.args[2] if len(conv.args) > 2 else None
        w = gm.get_parameter(w_node.target)
        g = _value(gm, gamma, torch.ones_like(w[:, 0, 0, 0]))
        b = _value(gm, beta, torch.zeros_like(g))
        m = _value(gm, mean, None)
        v = _value(gm, var, None)
        scale = g / torch.sqrt(v + eps)
        bias0 = _value(gm, b_node, torch.zeros_like(g))
        with torch.no_grad():
            new_w = w * scale.reshape(-1, 1, 1, 1)
            new_b = (bias0 - m) * scale + b
        conv_path = w_node.target.rsplit(".", 1)[0]
        _set_param(gm, w_node.target, new_w)
        bias_target = b_node.target if b_node is not None else f"{conv_path}.bias"
        _set_param(gm, bias_target, new_b)
        if b_node is None:
            with graph.inserting_before(conv):
                b_node = graph.get_attr(bias_target)
            b_node.meta.update(w_node.meta)
            update(b_node, param=bias_target, shape=tuple(new_b.shape), channels=None)
            args = list(conv.args)
            if len(args) < 3:
                args.append(b_node)
            else:
                args[2] = b_node
            conv.args = tuple(args)
        update(conv, folded_bn=info(bn).module_path)
        bn.replace_all_uses_with(conv)
        graph.erase_node(bn)
    graph.eliminate_dead_code()
    _drop_unused_attrs(gm)
    gm.recompile()
    return gm


def folds_batch(gm: fx.GraphModule) -> bool:
    """Whether some op moves the input's (dynamic) batch into another size, e.g. YOLO12's area attention reshaping
    (B, N, C) to (B*area, N/area, C): then a batch-1 tensor no longer broadcasts over a batch-B one downstream."""
    batch = None
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() == 0 or not isinstance(val.shape[0], torch.SymInt):
            continue
        if batch is None:
            batch = str(val.shape[0])  # the first placeholder's: the input batch
        elif str(val.shape[0]) != batch:
            return True
    return False


def owner_of(module: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """The submodule holding the parameter or buffer `name` ('model.4.cv1.conv.weight') and its leaf name."""
    path, _, leaf = name.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def get_tensor(module: torch.nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer of `module` called `name` (a dotted path, as fx get_attr targets are)."""
    owner, leaf = owner_of(module, name)
    return getattr(owner, leaf)


def _value(gm: fx.GraphModule, node, default):
    if node is None:
        return default
    return get_tensor(gm, node.target).detach()


def _set_param(gm: fx.GraphModule, target: str, value: torch.Tensor) -> None:
    owner, name = owner_of(gm, target)
    if name in owner._buffers:
        owner._buffers[name] = value.detach().clone()
    else:
        old = owner._parameters.get(name)
        grad = old.requires_grad if old is not None else True
        setattr(owner, name, torch.nn.Parameter(value.detach().clone(), requires_grad=grad))


def _drop_unused_attrs(gm: fx.GraphModule) -> None:
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner, leaf = owner_of(gm, name)
            owner._parameters.pop(leaf, None)
            owner._buffers.pop(leaf, None)

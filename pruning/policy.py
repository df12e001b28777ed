"""What in pruning knows ultralytics YOLO (all families and tasks): why head outputs are kept, what "backbone" means,
and how to keep ultralytics modules consistent after their tensors were sliced.

Which convs are head outputs and how many layers the backbone has are read from the model once at trace time
(NodeInfo role `head_output`, `FlatGraph.facts`); this module only turns them into reasons and layer sets.
The coupling analysis protects head outputs by their role and refuses channels that reach a reshape or a model
output anyway; the reason given here tells the user which output a conv produces.
"""

from __future__ import annotations

import operator
from typing import Callable, Iterable

from torch import fx, nn

import fxgraph
from fxgraph import nodeinfo

from .coupling import HeadLayout
from .errors import PlanError, UnknownLayerError

SCOPES = ("all", "backbone")


def describe_head_output(node_info: fxgraph.NodeInfo, graph: fxgraph.FlatGraph) -> str:
    """Why a head-output node (NodeInfo role `head_output`) may not be pruned, in the user's terms."""
    head = graph.facts.head_type if graph.facts is not None else "head"
    what = {
        nodeinfo.BOX: f"{head} output conv: box distribution (4*reg_max={4 * graph.reg_max})",
        nodeinfo.CLASSES: f"{head} output {'linear layer' if node_info.kind == 'linear' else 'conv'}: classes "
                          f"(nc={graph.nc})",
        nodeinfo.MASK_COEFFICIENTS: f"{head} output conv: mask coefficients (nm={graph.nm})",
        nodeinfo.DFL: "DFL (fixed integral weights)",
        nodeinfo.PROTO: f"Proto output (nm={graph.nm} prototypes)",
        nodeinfo.KEYPOINTS: f"{head} output conv: keypoints (nk={_keypoint_values(graph)})",
        nodeinfo.ANGLE: f"{head} output conv: rotation angle",
    }
    return what.get(node_info.output, f"{head} output ({node_info.output})")


def _keypoint_values(graph: fxgraph.FlatGraph) -> str:
    shape = graph.facts.kpt_shape if graph.facts is not None else None
    return str(shape[0] * shape[1]) if shape else "?"


def protector(graph: fxgraph.FlatGraph) -> Callable[[fx.Node], str | None]:
    """The `protect` callback of `pruning.coupling.analyze` for a YOLO graph: the reason a head output (marked at
    trace time in its NodeInfo) is kept."""

    def protect(node: fx.Node) -> str | None:
        facts = fxgraph.info(node)
        if facts.is_head_output:
            return describe_head_output(facts, graph)
        return attention_stream(facts, graph)

    return protect


def attention_stream(node_info: fxgraph.NodeInfo, graph: fxgraph.FlatGraph) -> str | None:
    """Why the stream around an ultralytics `Attention` is kept: its forward reshapes v by `view(B, C, H, W)` with
    C read from its input, so v's channels (the qkv conv, not sliced by this version) fix the width of its input
    and of `proj`'s output, and through the residual adds the whole stream (issue 14, constraint 4)."""
    path = node_info.module_path or ""
    parent_path, _, leaf = path.rpartition(".")
    if leaf != "conv" or not parent_path.endswith(".proj"):
        return None
    try:
        attention = graph.model.get_submodule(parent_path.rpartition(".")[0])
    except AttributeError:
        return None
    if type(attention).__name__ != "Attention":
        return None
    return (f"attention constraint 4: {parent_path} output is tied to v's channels by view(B, C, H, W) in "
            f"{type(attention).__name__}; whole heads are not pruned by this version (key dims are)")


def attention_heads(model: nn.Module) -> Callable[[fx.Node], HeadLayout | None]:
    """The `heads` callback of `pruning.coupling.analyze` for the traced `model` (a YOLO or any module holding
    ultralytics `Attention`s): the qkv reshape of each `Attention` splits its channels into `num_heads` blocks of (key_dim q, key_dim k, head_dim v), read from the module itself.

    Pruning inside attention = shrinking key_dim equally in every head (q/k channel pairs; v, pe, proj and the
    stream untouched; YOLO12's AAttn: q/k pairs and v dims alike, see `head_layout`), so its forward
    `qkv.view(B, num_heads, 2*key_dim + head_dim, N)` stays valid once
    `sync_modules` resyncs key_dim; whole-head removal would also need the stream to lose head_dim channels per
    head (view(B, C, H, W)), which plans cannot express yet."""

    def heads(node: fx.Node) -> HeadLayout | None:
        facts = fxgraph.info(node)
        if facts.module_type not in ("Attention", "AAttn") or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        source = fxgraph.info(node.args[0]).module_path or ""
        if not source.startswith(f"{facts.module_path}.qkv."):
            return None
        try:
            attention = model.get_submodule(facts.module_path)
        except AttributeError:
            return None
        return head_layout(attention, facts.module_path)

    return heads


def head_layout(attention: nn.Module, path: str) -> HeadLayout | None:
    """The head layout of an ultralytics attention, read from its attributes: `Attention` (key_dim q/k, head_dim v,
    a fixed `scale`, v viewed onto its input's width) or YOLO12's `AAttn` (one head_dim for q, k and v, v reshaped
    to its own `all_head_dim`, so v is cut too, and a scale recomputed from head_dim, so q is rescaled)."""
    sizes = [getattr(attention, a, None) for a in ("num_heads", "key_dim", "head_dim")]
    if all(isinstance(v, int) for v in sizes):
        return HeadLayout(*sizes, path)
    num_heads, _, head_dim = sizes
    all_head_dim = getattr(attention, "all_head_dim", None)
    if isinstance(num_heads, int) and isinstance(head_dim, int) and isinstance(all_head_dim, int):
        return HeadLayout(num_heads, head_dim, head_dim, path, v_channels=True,
                          rescale=not hasattr(attention, "scale"))
    return None

    return heads


BRANCH_PAIRS = (("cv2", "one2one_cv2"), ("cv3", "one2one_cv3"), ("cv4", "one2one_cv4"),
                ("cv4_kpts", "one2one_cv4_kpts"), ("cv4_sigma", "one2one_cv4_sigma"))
# (traced reader, training-only reader of the same features): Pose26's keypoint sigmas read cv4's features like
# its keypoints, but only in training, so the trace never sees them
TRAINING_READERS = (("cv4_kpts", "cv4_sigma"),)


def mirror_branches(drop: dict[str, dict[int, list[int]]], model: nn.Module) -> dict[str, dict[int, list[int]]]:
    """The slices of `drop` (cut from a trace of one head branch) plus the same slices of the branches that trace
    did not run, so that every forward training runs stays consistent.

    YOLO26's one-to-one head (`one2one_cv2/cv3`, Segment26's `one2one_cv4`) is built as a deep copy of the
    one-to-many head and reads the same features, so its tensors are cut at the same indices (both directions:
    a trace of either branch covers the other).  Proto26's training-only `semseg` reads the same fused P3 map
    as `feat_fuse`, so its first conv loses the input channels `feat_fuse` loses.
    """
    names = dict(model.named_parameters()) | dict(model.named_buffers())
    drop = _training_readers(drop, model, names)
    out = {name: dict(dims) for name, dims in drop.items()}

    def copy_to(target: str, dims: dict[int, list[int]]) -> None:
        if target in names and target not in drop:
            out[target] = dict(dims)

    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        for a, b in BRANCH_PAIRS:
            if hasattr(module, a) and hasattr(module, b):
                for name, dims in drop.items():
                    for src, dst in ((a, b), (b, a)):
                        if name.startswith(f"{prefix}{src}."):
                            copy_to(f"{prefix}{dst}." + name[len(prefix) + len(src) + 1 :], dims)
        if hasattr(module, "semseg") and hasattr(module, "feat_fuse") and module.semseg is not None:
            dims = drop.get(f"{prefix}feat_fuse.conv.weight", {})
            if 1 in dims:
                copy_to(f"{prefix}semseg.0.conv.weight", {1: dims[1]})
    return out


def _training_readers(drop: dict[str, dict[int, list[int]]], model: nn.Module, names) -> dict[str, dict[int, list[int]]]:
    """`drop` plus the input slices of the training-only readers (TRAINING_READERS) of features the trace cut."""
    out = {name: dict(dims) for name, dims in drop.items()}
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        for traced, hidden in TRAINING_READERS:
            if getattr(module, traced, None) is None or getattr(module, hidden, None) is None:
                continue
            for name, dims in drop.items():
                if name.startswith(f"{prefix}{traced}.") and name.endswith(".weight") and 1 in dims:
                    target = f"{prefix}{hidden}." + name[len(prefix) + len(traced) + 1 :]
                    if target in names and target not in drop:
                        out[target] = {1: dims[1]}
    return out


def scope_layers(scope: str | Iterable[int], graph: fxgraph.FlatGraph) -> frozenset[int] | None:
    """Layer indices a plan may cut: None for 'all', the model's backbone layers (`graph.facts.backbone`, from
    its yaml) for 'backbone', or the given indices (each one of the model's layers; PlanError / UnknownLayerError
    naming the scope otherwise, so a typo never gives an empty plan)."""
    count = len(graph.model.model)
    if isinstance(scope, str):
        if scope == "all":
            return None
        if scope == "backbone":
            backbone = graph.facts.backbone if graph.facts is not None else None
            if backbone is None:
                raise PlanError("scope 'backbone': this model does not say which layers are its backbone "
                                 "(its yaml has no 'backbone' list); give the layer indices instead")
            return frozenset(backbone)
        raise PlanError(f"unknown scope {scope!r}; use one of {', '.join(map(repr, SCOPES))} or a list of layer "
                        f"indices (0-{count - 1})")
    try:
        layers = [operator.index(i) for i in scope]
    except TypeError:
        raise PlanError(f"scope must be {' or '.join(map(repr, SCOPES))} or a list of layer indices (0-{count - 1}); "
                        f"got {scope!r}") from None
    if not layers:
        raise PlanError(f"scope {scope!r} names no layers; give layer indices (0-{count - 1}), 'all' or 'backbone'")
    unknown = sorted(i for i in set(layers) if not 0 <= i < count)
    if unknown:
        raise UnknownLayerError(f"scope names layer(s) {unknown} that the model does not have; its layers are "
                                f"0-{count - 1}")
    return frozenset(layers)


def sync_modules(model: nn.Module) -> None:
    """After slicing tensors, make each ultralytics module's own attributes agree with its tensors.

    Conv2d/ConvTranspose2d channel counts and groups, BatchNorm num_features, and the hidden width `c` of
    C2f-like blocks (used by their `forward_split`), `Attention`'s num_heads/key_dim/head_dim (its `scale` is
    kept: the cut network computes what the original did), `AAttn`'s head_dim/all_head_dim (its scale follows
    head_dim; surgery rescaled q for it), so that printing, fusing, exporting and re-running the module's own
    forward code all see the pruned sizes.
    """
    for module in model.modules():
        if isinstance(module, nn.ConvTranspose2d):
            module.in_channels = module.weight.shape[0]
            module.out_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            module.out_channels = module.weight.shape[0]
            if depthwise:
                module.groups = module.out_channels
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            ref = module.weight if module.weight is not None else module.running_mean
            module.num_features = ref.shape[0]
    for module in model.modules():
        cv1 = getattr(module, "cv1", None)
        if isinstance(getattr(module, "c", None), int) and (
            isinstance(getattr(module, "m", None), (nn.ModuleList, nn.Sequential)) or hasattr(module, "attn")
        ):
            conv = getattr(cv1, "conv", None)
            if isinstance(conv, nn.Conv2d) and conv.out_channels % 2 == 0:
                module.c = conv.out_channels // 2  # C2f / C3k2 / C2PSA / PSA: cv1 makes 2*c channels, split in halves
        if _is_attention(module):  # key dims were cut: head_dim and num_heads follow pe, key_dim the rest; scale kept
            width = module.pe.conv.out_channels
            module.num_heads = width // module.head_dim
            module.key_dim = (module.qkv.conv.out_channels // module.num_heads - module.head_dim) // 2
        elif _is_attention(module, sizes=("num_heads", "head_dim", "all_head_dim")):  # AAttn: one head_dim, cut
            module.all_head_dim = module.pe.conv.out_channels
            module.head_dim = module.all_head_dim // module.num_heads
        proto = getattr(module, "proto", None)
        if isinstance(getattr(module, "npr", None), int) and isinstance(getattr(proto, "cv1", None), nn.Module):
            module.npr = proto.cv1.conv.out_channels  # Segment: width of its Proto


def _is_attention(module: nn.Module, sizes: tuple[str, ...] = ("num_heads", "key_dim", "head_dim")) -> bool:
    """Whether `module` is laid out like ultralytics's `Attention` (qkv, pe, proj convs and head sizes; AAttn's
    sizes are num_heads, head_dim and all_head_dim)."""
    return all(isinstance(getattr(getattr(module, a, None), "conv", None), nn.Conv2d) for a in ("qkv", "pe", "proj")) \
        and all(isinstance(getattr(module, a, None), int) for a in sizes)

"""Composites: which rule explains which node.  A composite maps op kinds to rules and lets a user override the rule
for single nodes, by fx node name or by module path (glob patterns allowed, e.g. ``"model.22.cv3.*"``).

    relprop.explain(model, image, box, rules="deepshap")          # the default: pure DeepSHAP
    relprop.explain(model, image, box, rules="detdshap-paper")    # + LRP-αβ on the head's last convolutions
    relprop.explain(model, image, box, rules={"relu": Rescale(), "conv2d_47": AlphaBeta(2, 1)})
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Mapping, Union

from torch import fx

from fxgraph import info, nodeinfo, ops

from .errors import RuleError
from .rules import AlphaBeta, BatchNorm, Gradient, Identity, MatMul, MaxPool, Rescale, Rule, Shapley, Softmax

STRUCTURAL_KINDS = ops.STRUCTURAL


def deepshap_rules() -> dict[str, Rule]:
    """The default registry: every tensor kind of fxgraph's vocabulary mapped to its DeepSHAP rule."""
    table: dict[str, Rule] = {kind: Gradient() for kind in ops.LINEAR_KINDS}
    table.update({kind: Rescale() for kind in ops.ELEMENTWISE_KINDS})
    table.update(maxpool=MaxPool(), softmax=Softmax(), mul=Shapley(), div=Shapley(), matmul=MatMul(), identity=Identity())
    table["batchnorm"] = BatchNorm()
    return table


class Composite:
    """Rules by op kind, overridden by node name or module path.  `rule_for(node)` resolves one node."""

    def __init__(
        self,
        kinds: Mapping[str, Rule] | None = None,
        names: Mapping[str, Rule] | None = None,
        selectors: list[tuple[Callable[[fx.Node, fx.Graph], bool], Rule]] | None = None,
        name: str = "custom",
    ):
        self.kinds = dict(deepshap_rules() if kinds is None else kinds)
        self.names = dict(names or {})
        self.selectors = list(selectors or [])
        self.name = name

    def rule_for(self, node: fx.Node) -> Rule | None:
        """The rule of a compute node (None for structural nodes: inputs, parameters, constants, sizes, output)."""
        facts = info(node, None)
        kind = facts.kind if facts is not None else None
        if kind in STRUCTURAL_KINDS:
            return None
        if node.name in self.names:
            return self.names[node.name]
        path = facts.module_path if facts is not None else ""
        for pattern, rule in self.names.items():
            if path and fnmatch.fnmatchcase(path, pattern):
                return rule
        for select, rule in self.selectors:
            if select(node, node.graph):
                return rule
        if kind is None:
            raise RuleError(
                f"node {node.name} ({node.target}) has no 'kind' in its metadata; trace the model with "
                "fxgraph.trace / fxgraph.trace_module (relprop.attribute does this for a plain nn.Module)"
            )
        if kind not in self.kinds:
            raise RuleError(
                f"no relevance rule for op kind '{kind}' (node {node.name}, {node.target}, "
                f"module {path or '-'}); add one with rules={{'{kind}': <Rule>}}"
            )
        return self.kinds[kind]

    def __repr__(self) -> str:
        return f"Composite({self.name!r}, overrides={sorted(self.names)})"


def is_head_output_conv(node: fx.Node, graph: fx.Graph | None = None) -> bool:
    """A convolution of the detection head that produces an output map directly (YOLOv8's cv2.i.2 box, cv3.i.2 class
    and cv4.i.2 mask-coefficient 1×1 convolutions), as fxgraph.trace marked it from the model (NodeInfo role
    `head_output`).  The DFL's fixed convolution and Proto's output are head outputs too, but not maps of candidates.
    """
    facts = info(node, None)
    return facts is not None and facts.kind == "conv" and facts.is_head_output and facts.output in nodeinfo.PREDICTION_OUTPUTS


def detdshap_paper() -> Composite:
    """DeepSHAP everywhere, and LRP-αβ (α=1, β=0) on the head's output convolutions, as in DetDSHAP (Eq. 11)."""
    return Composite(selectors=[(is_head_output_conv, AlphaBeta(1.0, 0.0))], name="detdshap-paper")


PRESETS: dict[str, Callable[[], Composite]] = {
    "deepshap": lambda: Composite(name="deepshap"),
    "detdshap-paper": detdshap_paper,
}

RulesSpec = Union[None, str, Composite, Mapping[str, Rule]]


def resolve(rules: RulesSpec) -> Composite:
    """Turn what a user passes as `rules` into a Composite.

    None or "deepshap": the default.  "detdshap-paper": the paper's variant.  A Composite: itself.  A dict: keys that
    are op kinds override those kinds, any other key is a node name or a module-path pattern.
    """
    if rules is None:
        return PRESETS["deepshap"]()
    if isinstance(rules, Composite):
        return rules
    if isinstance(rules, str):
        if rules not in PRESETS:
            raise RuleError(f"unknown rules preset '{rules}'; choose one of {sorted(PRESETS)}")
        return PRESETS[rules]()
    if isinstance(rules, Mapping):
        bad = [k for k, v in rules.items() if not isinstance(v, Rule)]
        if bad:
            raise RuleError(f"rules for {bad} are not relprop.rules.Rule instances")
        kinds = deepshap_rules()
        names = {}
        for key, rule in rules.items():
            (kinds if key in ops.TENSOR_KINDS else names)[key] = rule
        return Composite(kinds, names, name="custom")
    raise RuleError(f"rules must be None, a preset name, a dict or a Composite; got {type(rules).__name__}")

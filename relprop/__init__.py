"""relprop: DeepSHAP relevance for ultralytics YOLO outputs, exactly conserved (DetDSHAP, Hogan & Aouf 2025).

    ex = relprop.explain(model, "bus.jpg", box=(x1, y1, x2, y2))   # Explanation: heatmap, channels, delta, save_png
    exs = relprop.explain(model, "bus.jpg")                        # every detection after NMS
    attr, delta = relprop.attribute(module, inputs, baselines, target_fn)   # the generic layer, any fx-traceable net

How: the flat fx graph of `fxgraph` is rewritten so that each nonlinear op runs through an autograd Function whose
backward is its DeepLIFT/DeepSHAP rule (`relprop.rules`, chosen per op kind or node by a `Composite`); one ordinary
backward pass then yields multipliers whose product with (x − x0) sums exactly to f(x) − f(x0).

Modules: `explainer` (YOLO boxes), `attribute` (any traced net), `engine`, `compiled` (the pass under
torch.compile), `rules` (a module per rule family), `composites`, `target`, `image`, `explanation`, `display` and
`page` (notebook rendering, the browsable index.html), `layercam` (LayerCAM maps), `options` (ExplainOptions), `cli`.
The package attributes `relprop.explainer` and `relprop.attribute` are the functions of those names; reach the
modules with ``from relprop.explainer import ...``.

Owns the relevance rules, the two-phase engine and explaining boxes.  Imports fxgraph; must not import pruning
(tests/test_layers.py).
"""

from .attribute import attribute, relevance_graph
from .composites import Composite, deepshap_rules, detdshap_paper, resolve
from .display import ExplanationGrid, show
from .engine import Pass, References, Relevance, RelevanceGraph
from .errors import (BaselineError, BoxError, ImageError, NoMatchError, OptionsError, OutputError, RelpropError,
                     RuleError)
from .explainer import Explainer, explain, explainer
from .explanation import Explanation
from .image import CenterCrop, Letterbox
from .options import ExplainOptions
from .page import ExplanationPage, browse
from .rules import AlphaBeta, Gradient, MatMul, MaxPool, Rescale, Rule, Shapley, Softmax

__all__ = [
    "AlphaBeta", "BaselineError", "ExplanationGrid", "ExplanationPage", "browse", "show", "BoxError", "Composite", "ExplainOptions", "Explainer", "Explanation", "Gradient",
    "CenterCrop", "ImageError", "Letterbox", "MaxPool", "NoMatchError", "OptionsError", "OutputError", "Pass", "References",
    "Relevance",
    "MatMul", "RelevanceGraph", "RelpropError", "Rescale", "Rule", "RuleError", "Shapley", "Softmax", "attribute",
    "deepshap_rules", "detdshap_paper", "explain", "explainer", "relevance_graph", "resolve",
]

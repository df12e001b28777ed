"""fxgraph: one flat, annotated torch.fx graph of any ultralytics YOLO (v5u, v8, v9, v10, 11, 12, 26; every task).

    g = fxgraph.trace("best.pt", imgsz=640)   # FlatGraph; g.module is a torch.fx.GraphModule
    g.module(x)                                 # (pred,) or (pred, proto), equal to ultralytics's eval outputs
    fxgraph.to_networkx(g)                      # networkx DiGraph with each node's metadata

Every node carries one NodeInfo (`fxgraph.info(node)`, fxgraph.nodeinfo): `kind` (closed vocabulary in
fxgraph.ops), `layer` (ultralytics layer index or None), `module_path`, `module_type`, `shape`, `channels`,
`param` (a parameter's name), `folded_bn` and `role` (`head_output`, with `output`: what it produces).  The
model's own facts (backbone length, stride, head outputs) are `FlatGraph.facts` (ModelFacts).

Owns tracing, node and model facts, graph passes (BN folding) and statistics (params, GFLOPs), and, as the base
layer every package imports, `fxgraph.outputs`: output files checked before work and written atomically.  It must
import neither relprop nor pruning (tests/test_layers.py).
"""

from .errors import ArgumentError, FxGraphError, ModelLoadError, OutputError, UnsupportedModelError, UnsupportedOpError
from . import nodeinfo
from .graph import FlatGraph, ModelFacts
from .loading import embedded_weights, load_ultralytics
from .networkx_graph import to_networkx
from .nodeinfo import HEAD_OUTPUT, NodeInfo, info
from .passes import fold_batchnorm, folds_batch
from .tracer import data_args, trace_module
from .trace_yolo import check_imgsz, check_supported, reference_outputs, trace

__all__ = [
    "ArgumentError",
    "FlatGraph",
    "HEAD_OUTPUT",
    "ModelFacts",
    "NodeInfo",
    "FxGraphError",
    "ModelLoadError",
    "OutputError",
    "UnsupportedModelError",
    "UnsupportedOpError",
    "check_imgsz",
    "check_supported",
    "data_args",
    "folds_batch",
    "embedded_weights",
    "fold_batchnorm",
    "info",
    "load_ultralytics",
    "reference_outputs",
    "to_networkx",
    "trace",
    "trace_module",
]

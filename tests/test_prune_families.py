"""Every criterion (l1, l2, random, taylor, hsic, detdshap) scores and prunes YOLO11 and YOLO26, and the pruned model
runs: random weights, four synthetic images at 64 px.  On YOLO26 the data-driven criteria score the head branch
the graph was traced on (`graph.facts.branch`), and the pruned model runs both branches and trains."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import positive_ltrb, random_model

import fxgraph
import pruning
from pruning.criteria import HSIC, Calibration, DetDSHAP, Taylor, get_criterion, load_calibration
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset
from relprop.target import detections, topk_detections

IMGSZ = 64
GROUP, FILTER = "model.3.conv", 5  # a backbone Conv's filter, silenced: every criterion but random scores it 0
CASES = [("yolo11n.yaml", None), ("yolo26n.yaml", "one2many"), ("yolo26n.yaml", "one2one")]
CRITERIA = ["l1", "l2", "random", "taylor", "hsic", "detdshap"]
DATA_DRIVEN = {"taylor", "hsic", "detdshap"}


@functools.lru_cache(maxsize=None)
def shapes(root: str):
    return make_shapes_dataset(root, ShapesConfig(n_train=8, n_val=4, imgsz=IMGSZ, seed=0))


def silenced_model(name: str) -> torch.nn.Module:
    """A random-weight model whose filter FILTER of GROUP outputs exactly 0.
    YOLO26's raw ltrb box outputs (reg_max = 1) are set to a constant 0.5 (zero weights, bias 0.5): random weights
    give x2 < x1 boxes that no candidate can match, and in full test runs a 1e-3 scaling still left boxes of
    negative width."""
    model = random_model(name)
    positive_ltrb(model, 0.0)
    with torch.no_grad():
        layer = model.get_submodule(GROUP.rsplit(".", 1)[0])
        layer.conv.weight[FILTER] = 0
        layer.bn.weight[FILTER] = 0
        layer.bn.bias[FILTER] = 0
    return model


def own_labels(graph: fxgraph.FlatGraph, calib: Calibration) -> Calibration:
    """The calibration images labelled with the graph's own two most confident detections (random weights find
    none of the shapes), so DetDSHAP's ground-truth matching has boxes to explain on either YOLO26 branch."""
    batches = []
    for b in calib.batches:
        with torch.no_grad():
            preds = graph.module(b["img"].float() / 255)[0]
        boxes, classes, index = [], [], []
        for i, pred in enumerate(preds):
            if graph.facts.box_format == "xyxy":  # the one2one branch: ultralytics's top-k, no NMS
                found = topk_detections(pred, graph.nc, conf=0.0, max_det=300)
            else:
                found = detections(pred, graph.nc, conf=0.0, iou=0.7, max_det=300)
            # random ltrb can be negative (in full runs even after silenced_model's scaling: seen, not explained),
            # so the two most confident well-formed boxes are kept
            found = [d for d in found if d.box[2] > d.box[0] and d.box[3] > d.box[1]][:2]
            assert found
            for d in found:
                x1, y1, x2, y2 = (float(v) / IMGSZ for v in d.box)
                boxes.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
                classes.append([float(d.cls)])
                index.append(float(i))
        batches.append({**b, "bboxes": torch.tensor(boxes), "cls": torch.tensor(classes),
                        "batch_idx": torch.tensor(index)})
    return Calibration(batches, calib.task, calib.imgsz, calib.args)


@functools.lru_cache(maxsize=None)
def setup(name: str, branch: str | None, root: str):
    graph = fxgraph.trace(silenced_model(name), IMGSZ, branch=branch)
    calib = load_calibration(shapes(root), graph.task, IMGSZ, 4, batch=4, stride=int(max(graph.stride)))
    return graph, pruning.analyze(graph), own_labels(graph, calib)


def build(criterion: str, calib: Calibration):
    if criterion == "taylor":
        return Taylor(calib)
    if criterion == "hsic":
        return HSIC(calib)
    if criterion == "detdshap":
        return DetDSHAP(calib)  # labels: the model's own boxes; class and coordinates explained
    return get_criterion(criterion)


@functools.lru_cache(maxsize=None)
def scored(name: str, branch: str | None, criterion: str, root: str):
    graph, coupling, calib = setup(name, branch, root)
    crit = build(criterion, calib)
    return crit, crit(graph, coupling)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("families") / "datasets")


def branch_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The first output of every inference branch (YOLO26: one2many and one2one) and the training outputs."""
    head = model.model[-1]
    out = []
    with torch.no_grad():
        for end2end in ((False, True) if getattr(head, "one2one_cv2", None) is not None else (None,)):
            if end2end is not None:
                head.end2end = end2end
            out.append(model.eval()(x)[0])
        train = model.train()(x)
        model.eval()
    return out + flat_tensors(train)


def flat_tensors(value) -> list[torch.Tensor]:
    """Every tensor of a nested output, except the head's input features ("feats"), which lose channels."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() if k != "feats" for t in flat_tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flat_tensors(v)]
    return []


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name, branch", CASES, ids=["yolo11n", "yolo26n-one2many", "yolo26n-one2one"])
def test_criterion_scores_and_prunes_the_new_families(name, branch, criterion, root):
    graph, coupling, _calib = setup(name, branch, root)
    assert graph.facts.family == name.split("n.")[0] and graph.facts.branch == branch
    crit, scores = scored(name, branch, criterion, root)
    prunable = [g for g in coupling.prunable()]
    for group in prunable:  # one finite score per unit of every prunable group
        s = scores[group.name]
        assert s.shape == (len(group),) and torch.isfinite(s).all(), group.name
    everything = torch.cat([scores[g.name].double() for g in prunable])
    assert everything.unique().numel() > 1, "constant scores"
    if criterion != "random":  # the silenced filter carries nothing, for the data and for the weights alike
        unit = next(u for u, unit in enumerate(coupling.groups[GROUP].units) if (GROUP, FILTER) in unit.sources)
        silent = -2.0 if criterion == "hsic" else 0.0  # HSIC: a constant unit scores -2, below any KKT gradient
        assert scores[GROUP][unit] == silent and scores[GROUP][unit] <= everything.min()
    if criterion in DATA_DRIVEN and criterion != "hsic":  # gradients / relevance reach the traced head branch
        prefix = f"model.{graph.facts.head_layer}.{'one2one_' if branch == 'one2one' else ''}cv"
        head = [g.name for g in prunable if g.name.startswith(prefix)]
        assert head and sum(float(scores[n].abs().sum()) for n in head) > 0, f"{criterion} gave {prefix}* no score"
    if criterion == "detdshap":
        assert crit.explained >= 4 and crit.skipped == 0  # at least one box of each of the four images

    plan = pruning.plan(graph, ratio=0.2, criterion=pruning.criteria.Precomputed(scores, criterion))
    cut = pruning.prune(graph, plan)
    assert cut.report.params_after < cut.report.params_before
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    before, after = branch_outputs(graph.model, x), branch_outputs(cut.model, x)
    assert [t.shape for t in after] == [t.shape for t in before]  # same predictions per anchor, every branch
    assert all(torch.isfinite(t).all() for t in after)
    assert cut.graph.module(x)[0].shape == graph.module(x)[0].shape


def pruned_for_shapes(name: str) -> pruning.Pruned:
    """`name` built for the synthetic data's classes, 30% of its filters cut by l1 magnitude."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    from pruning.job.synthetic import CLASSES

    torch.manual_seed(0)
    cls = SegmentationModel if "-seg" in name else DetectionModel
    model = cls(name, nc=len(CLASSES), verbose=False).eval()
    model.names = dict(enumerate(CLASSES))
    return pruning.prune(model, imgsz=IMGSZ, ratio=0.3, criterion="l1")


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo26n.yaml", "yolo26n-seg.yaml"])
def test_finetune_keeps_the_pruned_architecture_and_trains_every_branch(name, root, tmp_path):
    """One epoch of our trainer on the synthetic shapes: the parameter count stays the pruned count, every tensor
    keeps its pruned shape, and the weights change in the backbone and in each head branch (YOLO26: one2many and
    one2one; YOLO26-seg: Proto26's training-only semseg too)."""
    from ultralytics import YOLO

    from fxgraph import stats

    cut = pruned_for_shapes(name)
    data = make_shapes_dataset(root, ShapesConfig(n_train=8, n_val=4, imgsz=IMGSZ, seed=0))
    before = {k: v.detach().clone().float() for k, v in cut.model.state_dict().items()}
    yolo = pruning.finetune(cut, data=str(data), epochs=1, imgsz=IMGSZ, batch=4, workers=0, device="cpu",
                            project=str(tmp_path / "runs"), name="ft", exist_ok=True, plots=False, amp=False,
                            verbose=False, val=False)
    trained = YOLO(str(yolo.trainer.last)).model
    assert sum(p.numel() for p in trained.parameters()) == stats.num_params(cut.graph) < cut.report.params_before
    after = trained.float().state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape for k in before)
    changed = {k for k in before if k.endswith(".weight") and not torch.allclose(after[k], before[k], atol=1e-4)}
    head = f"model.{cut.graph.facts.head_layer}."
    parts = ["model.0.", f"{head}cv2.", f"{head}cv3."]
    if getattr(cut.model.model[-1], "one2one_cv2", None) is not None:
        parts += [f"{head}one2one_cv2.", f"{head}one2one_cv3."]
    if "-seg" in name:
        parts += [f"{head}cv4.", f"{head}proto."]
        if hasattr(cut.model.model[-1].proto, "semseg"):
            parts += [f"{head}proto.semseg."]
    untrained = [p for p in parts if not any(k.startswith(p) for k in changed)]
    assert not untrained, f"training left these weights unchanged: {untrained}"

"""Pruning on every ultralytics task and the new families (issue 28, item 1): pose and Pose26 (keypoints kept),
OBB and OBB26 (angle kept), classify (its Linear kept, its input features cut with the conv before it), YOLOv10
(C2fCIB, PSA, SCDown, both head branches) and YOLO12 (A2C2f).  Zeroed channels cut from the float64 graph leave
every output of the model equal; a pruned checkpoint of each task loads, predicts and exports with plain
ultralytics in a fresh process."""

from __future__ import annotations

import copy
import functools
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cached_model, e2e_ready_model, hide_project, randomize_batchnorm, zero_units

import fxgraph
import pruning
from fxgraph import nodeinfo
from pruning.policy import BRANCH_PAIRS

IMGSZ = 64
MODELS = ["yolo11n-pose.yaml", "yolo26n-pose.yaml", "yolo11n-obb.yaml", "yolo26n-obb.yaml", "yolov8n-cls.yaml",
          "yolo11n-cls.yaml", "yolov10n.yaml", "yolo12n.yaml", "yolo12n-seg.yaml"]
# what each task's head must keep whole: (NodeInfo output, count)
KEPT = {"pose": nodeinfo.KEYPOINTS, "obb": nodeinfo.ANGLE, "classify": nodeinfo.CLASSES}


@functools.lru_cache(maxsize=None)
def sensitized(name: str) -> fxgraph.FlatGraph:
    """A float64 trace of the random model with random BatchNorm (so every live channel changes the outputs)."""
    model = copy.deepcopy(cached_model(name))
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    return fxgraph.trace(model, imgsz=IMGSZ, dtype=torch.float64)


def random_removal(coupling, seed: int) -> dict[str, tuple[int, ...]]:
    """Random units of every prunable block (the same count in each group of a block, other indices)."""
    rng = random.Random(seed)
    remove = {}
    for block in coupling.all_blocks():
        groups = [coupling.groups[n] for n in block]
        if not all(g.prunable for g in groups) or len(groups[0]) < 2:
            continue
        n = rng.randint(1, len(groups[0]) - 1)
        for g in groups:
            remove[g.name] = tuple(sorted(rng.sample(range(len(g)), n)))
    return remove


def outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The model's own eval outputs: the decoded predictions of every head branch (YOLOv10 and YOLO26: one-to-many
    and one-to-one), whose rows hold pose keypoints and OBB angles, the segment prototypes, and a classifier's
    probabilities and logits."""
    head = model.model[-1]
    with torch.no_grad():
        if type(head).__name__ == "Classify":
            probabilities, logits = model.eval()(x)
            return [probabilities, logits]
        branches = ["one2many", "one2one"] if getattr(head, "one2one_cv2", None) is not None else [None]
        return [t for b in branches for t in fxgraph.reference_outputs(model, x, branch=b)]


def copy_branches(model: torch.nn.Module, traced: str | None) -> None:
    """Give the head branch the trace did not run the (zeroed) weights of the one it ran: YOLOv10's and YOLO26's
    one-to-one head is a deep copy of the one-to-many head, cut at the same slices."""
    head = model.model[-1]
    with torch.no_grad():
        for o2m, o2o in BRANCH_PAIRS:
            if getattr(head, o2o, None) is None or getattr(head, o2m, None) is None:
                continue
            src, dst = (o2o, o2m) if traced == "one2one" else (o2m, o2o)
            getattr(head, dst).load_state_dict(getattr(head, src).state_dict())


@pytest.mark.parametrize("name", MODELS, ids=[m.split(".")[0] for m in MODELS])
def test_zeroed_channels_cut_leave_every_output_equal(name):
    g = sensitized(name)
    coupling = pruning.analyze(g)
    task = g.facts.task
    if task in KEPT:  # the task's own output is protected by its role, whatever the family
        kept = [grp for grp in coupling.groups.values() if any(
            fxgraph.info(n).output == KEPT[task] for n in g.module.graph.nodes
            if fxgraph.info(n).module_path in grp.sources)]
        assert kept and all(not grp.prunable for grp in kept)
    remove = random_removal(coupling, 3)
    zeroed = copy.deepcopy(g)
    model, gm = zeroed.model, zeroed.module
    zero_units((gm, model), coupling, remove)
    copy_branches(model, g.facts.branch)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before, graph_before = outputs(model, x), list(gm(x))
    pruned = pruning.prune(zeroed, pruning.Plan(remove=remove))
    assert pruned.report.params_after < pruned.report.params_before
    with torch.no_grad():
        after, graph_after = outputs(pruned.model, x), list(pruned.graph.module(x))
    assert len(after) == len(before) >= 1 and [a.shape for a in after] == [b.shape for b in before]
    assert max(float((a - b).abs().max()) for a, b in zip(after, before)) <= 1e-8
    assert max(float((a - b).abs().max()) for a, b in zip(graph_after, graph_before)) <= 1e-8


def test_classify_linear_loses_the_features_its_conv_loses():
    g = sensitized("yolov8n-cls.yaml")
    coupling = pruning.analyze(g)
    head = g.model.model[-1]
    (conv,) = [grp for grp in coupling.groups.values() if grp.name == "model.9.conv.conv"]
    assert conv.prunable and "model.9.linear.weight" in conv.params()
    pruned = pruning.prune(g, pruning.Plan(remove={conv.name: (0, 5, 7)}))
    linear = pruned.model.model[-1].linear
    assert linear.in_features == linear.weight.shape[1] == head.linear.in_features - 3
    assert linear.out_features == head.linear.out_features


def test_pose26_training_only_sigma_head_follows_its_features():
    """Pose26's cv4_sigma runs only in training: it loses the input channels cv4_kpts loses, and trains."""
    g = sensitized("yolo26n-pose.yaml")
    cut = pruning.prune(g, ratio=0.3, criterion="l1")
    head = cut.model.model[-1]
    for convs in ((head.cv4_kpts, head.cv4_sigma), (head.one2one_cv4_kpts, head.one2one_cv4_sigma)):
        for kpts, sigma in zip(*convs):
            assert kpts.in_channels == sigma.in_channels == sigma.weight.shape[1] < 51 * 2
    model = cut.model.train()
    y = model(torch.rand(1, 3, IMGSZ, IMGSZ, dtype=torch.float64))
    assert y["one2many"]["kpts_sigma"].shape[1] == head.nk_sigma


# ---------------------------------------------------------------------------------------------- fresh process

SCRIPT = hide_project(1) + textwrap.dedent(
    """
    import copy, importlib, json
    import numpy as np, torch, onnxruntime
    from ultralytics import YOLO

    x = torch.from_numpy(np.load(sys.argv[2]))
    report = {}
    for weights in sys.argv[3:]:
        yolo = YOLO(weights)
        model = yolo.model.float().eval()
        results = yolo.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, device="cpu", verbose=False)
        onnx_path = yolo.export(format="onnx", imgsz=64, simplify=False, dynamic=False, device="cpu")
        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        ort = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        ref_model = copy.deepcopy(model).fuse().eval()
        head = ref_model.model[-1]
        for m in ref_model.modules():
            if hasattr(m, "export"):
                m.export, m.format = True, "onnx"
        if getattr(head, "end2end", False):
            head.max_det = ort[0].shape[1]  # the exporter clamps max_det to the anchors at 64 px
        with torch.no_grad():
            ref = ref_model(x)
        ref = [t.numpy() for t in (ref if isinstance(ref, (tuple, list)) else [ref])]
        # differences relative to max(1, |torch|): float32 rounds a box coordinate of a random-weight head (up to
        # ~1e3 px) to ~1e-4 absolute, so an absolute bound would test the magnitude, not the export
        if getattr(head, "end2end", False):  # top-k rows compared as sets: near-equal scores may swap places
            o, r = ort[0][0][:, None], ref[0][0][None]
            rows = (np.abs(o - r) / np.maximum(1, np.abs(r))).max(-1)
            diff = max(float(rows.min(1).max()), float(rows.min(0).max()))
        else:
            diff = max(float((np.abs(o - r) / np.maximum(1, np.abs(r))).max()) for o, r in zip(ort, ref))
        report[weights] = {
            "task": yolo.task, "params": sum(p.numel() for p in model.parameters()), "predicted": len(results),
            "shapes": [list(o.shape) for o in ort], "ref_shapes": [list(r.shape) for r in ref], "onnx_diff": diff,
            "packages": sorted({type(m).__module__.split(".")[0] for m in model.modules()}),
        }
    report["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in PROJECT)
    print(json.dumps(report))
    """
)

FRESH = {"yolo11n-pose.yaml": "pose", "yolo11n-obb.yaml": "obb", "yolo11n-cls.yaml": "classify",
         "yolov10n.yaml": "detect"}


def test_pruned_task_checkpoints_load_predict_and_export_without_the_project(tmp_path):
    """One `python -I` process loads each pruned checkpoint with plain `YOLO(path)`, predicts, exports ONNX and
    compares it with the checkpoint's own torch forward in export mode (YOLOv10: its end-to-end top-k rows)."""
    paths, cuts = [], {}
    for name in FRESH:
        cut = pruning.prune(e2e_ready_model(name), imgsz=IMGSZ, ratio=0.4, criterion="l1")
        path = cut.save(tmp_path / f"{name.split('.')[0]}-pruned.pt")
        paths.append(str(path))
        cuts[str(path)] = cut
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-I", str(script), str(repo), str(tmp_path / "x.npy"), *paths],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report.pop("loaded") == []
    for (name, task), path in zip(FRESH.items(), paths):
        row, cut = report[path], cuts[path]
        assert row["task"] == task, name
        assert row["params"] == cut.report.params_after < cut.report.params_before, name
        assert set(row["packages"]) <= {"ultralytics", "torch"} and row["predicted"] == 1, name
        assert row["shapes"] == row["ref_shapes"], name
        assert row["onnx_diff"] <= 1e-4, (name, row["onnx_diff"])


def test_yolov10_blocks_keep_their_own_rules_when_cut():
    """SCDown's depthwise conv keeps groups == channels, PSA loses key dims equally in every head (its v and
    stream kept), C2fCIB narrows, and the one-to-one head is cut at the one-to-many head's slices."""
    g = sensitized("yolov10n.yaml")
    coupling = pruning.analyze(g)
    assert len(coupling.heads) == 1  # PSA's Attention
    before = {n: m for n, m in g.model.named_modules()}
    cut = pruning.prune(g, pruning.Plan(remove=random_removal(coupling, 4)))
    after = dict(cut.model.named_modules())
    scdown = [n for n, m in after.items() if type(m).__name__ == "SCDown"]
    assert scdown and any(after[n].cv2.conv.out_channels < before[n].cv2.conv.out_channels for n in scdown)
    for n in scdown:
        dw = after[n].cv2.conv
        assert dw.groups == dw.in_channels == dw.out_channels == dw.weight.shape[0] == after[n].cv1.conv.out_channels
    (psa,) = [m for m in after.values() if type(m).__name__ == "PSA"]
    assert psa.attn.key_dim < before["model.10"].attn.key_dim and psa.attn.head_dim == 64
    assert psa.c * 2 == psa.cv1.conv.out_channels
    cib = [n for n, m in after.items() if type(m).__name__ == "C2fCIB"]
    assert cib and any(after[n].cv1.conv.out_channels < before[n].cv1.conv.out_channels for n in cib)
    head = cut.model.model[-1]
    for o2m, o2o in (("cv2", "one2one_cv2"), ("cv3", "one2one_cv3")):
        assert {k: v.shape for k, v in getattr(head, o2m).state_dict().items()} == \
            {k: v.shape for k, v in getattr(head, o2o).state_dict().items()}


# ---------------------------------------------------------------------------------------------- criteria (item 2)

CRITERION_TASKS = {"pose": "yolo11n-pose.yaml", "obb": "yolo11n-obb.yaml", "classify": "yolo11n-cls.yaml"}
CRITERION_CASES = [(task, c) for task in ("pose", "obb") for c in ("l1", "random", "taylor", "hsic", "detdshap")] + \
    [("classify", c) for c in ("l1", "taylor", "hsic", "detdshap", "detdshap-labels")]
SILENCED = ("model.3.conv", 5)  # a backbone filter that outputs exactly 0: every criterion but random scores it 0


@functools.lru_cache(maxsize=None)
def task_setup(task: str, root: str):
    """A random pose (kpt_shape of the synthetic stars, [5, 3]) or OBB model with one silenced filter, its trace,
    coupling and four calibration images of the task's synthetic shapes."""
    from ultralytics.nn.tasks import ClassificationModel, OBBModel, PoseModel

    from pruning.criteria import load_calibration
    from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

    torch.manual_seed(0)
    kinds = {"pose": lambda cfg: PoseModel(cfg, data_kpt_shape=(5, 3), verbose=False),
             "obb": lambda cfg: OBBModel(cfg, verbose=False), "classify": lambda cfg: ClassificationModel(cfg, verbose=False)}
    model = kinds[task](CRITERION_TASKS[task])
    for m in model.modules():  # recalibrated BN, as conftest.random_model
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, IMGSZ, IMGSZ))
        layer = model.get_submodule(SILENCED[0].rsplit(".", 1)[0])
        layer.conv.weight[SILENCED[1]] = 0
        layer.bn.weight[SILENCED[1]] = 0
        layer.bn.bias[SILENCED[1]] = 0
    graph = fxgraph.trace(model.eval(), IMGSZ)
    data = make_shapes_dataset(root, ShapesConfig(n_train=8, n_val=4, imgsz=IMGSZ, seed=0), task=task)
    calib = load_calibration(data, graph.task, IMGSZ, 4, batch=4, stride=int(max(graph.stride)))  # classify: a folder
    return graph, pruning.analyze(graph), calib


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tasks") / "datasets")


@pytest.mark.parametrize("task, criterion", CRITERION_CASES)
def test_criteria_score_and_prune_every_task(task, criterion, shapes_root):
    """Taylor through the task's own loss (keypoints, rotated boxes, class cross-entropy on a classification
    folder), HSIC on the task's outputs, DetDSHAP on the model's own detections (OBB: rotated, matched by probiou)
    and the data-free criteria score every prunable unit, the silenced filter 0."""
    from pruning.criteria import HSIC, DetDSHAP, Taylor
    from pruning.criterion import Precomputed, get_criterion

    graph, coupling, calib = task_setup(task, shapes_root)
    crit = {"taylor": lambda: Taylor(calib), "hsic": lambda: HSIC(calib),
            "detdshap": lambda: DetDSHAP(calib, boxes="detections", conf=0.0),
            "detdshap-labels": lambda: DetDSHAP(calib)}.get(
        criterion, lambda: get_criterion(criterion))()
    scores = crit(graph, coupling)
    prunable = coupling.prunable()
    for group in prunable:
        assert scores[group.name].shape == (len(group),) and torch.isfinite(scores[group.name]).all(), group.name
    assert torch.cat([scores[g.name].double() for g in prunable]).unique().numel() > 1
    if criterion.startswith("detdshap"):
        assert crit.explained >= (calib.n_images if task == "classify" else 1)  # a classifier: every image's class
    if criterion != "random":
        unit = next(u for u, un in enumerate(coupling.groups[SILENCED[0]].units) if SILENCED in un.sources)
        silent = -2.0 if criterion == "hsic" else 0.0  # HSIC: a constant unit scores -2, below any KKT gradient
        everything = torch.cat([scores[g.name].double() for g in prunable])
        assert float(scores[SILENCED[0]][unit]) == silent and float(scores[SILENCED[0]][unit]) <= everything.min()
    plan = pruning.plan(graph, coupling=coupling, ratio=0.3, criterion=Precomputed(scores, criterion))
    cut = pruning.prune(graph, plan)
    with torch.no_grad():
        pred = cut.graph.module(torch.rand(1, 3, IMGSZ, IMGSZ))[0]
    assert pred.shape[1] == graph.module(torch.rand(1, 3, IMGSZ, IMGSZ))[0].shape[1]  # keypoints / angle rows kept


def test_obb_calibration_boxes_are_rotated_in_input_pixels(shapes_root):
    """OBB labels reach DetDSHAP as xywhr in input pixels (the rotated boxes relprop matches), not cut to 4 numbers."""
    _graph, _coupling, calib = task_setup("obb", shapes_root)
    batch = calib.batches[0]
    image, boxes, classes = next(calib.images())
    first = batch["bboxes"][batch["batch_idx"] == 0]
    assert boxes.shape == (len(first), 5) == (len(classes), 5)
    expected = first * torch.tensor([IMGSZ, IMGSZ, IMGSZ, IMGSZ, 1.0])
    assert torch.allclose(boxes, expected) and (boxes[:, 4] != 0).any()  # the angles of the drawn shapes


def test_classification_folder_calibration_refuses_another_task_or_a_missing_split(shapes_root):
    from pruning.criteria import load_calibration
    from pruning.errors import PruningError

    _graph, _coupling, calib = task_setup("classify", shapes_root)
    (folder,) = Path(shapes_root).glob("shapes-classify-*")
    assert calib.task == "classify" and float(calib.batches[0]["img"].max()) > 1  # 0-255 like detection batches
    with pytest.raises(PruningError, match="classification folder; a detect model needs a dataset yaml"):
        load_calibration(folder, "detect", IMGSZ, 4)
    with pytest.raises(PruningError, match="has no 'test' folder"):
        load_calibration(folder, "classify", IMGSZ, 4, split="test")


def test_detdshap_all_explains_the_keypoints(shapes_root):
    """calib_target=all adds a pose model's keypoint rows: the keypoint branch's inner conv, which feeds neither
    boxes nor classes, scores 0 with target='class' and > 0 with 'all'."""
    from pruning.criteria import DetDSHAP

    graph, coupling, calib = task_setup("pose", shapes_root)
    branch = [g.name for g in coupling.prunable() if g.name.startswith(f"model.{graph.facts.head_layer}.cv4.0.1")]
    assert branch
    scores = {t: DetDSHAP(calib, boxes="detections", conf=0.0, target=t)(graph, coupling) for t in ("class", "all")}
    assert all(float(scores["class"][n].abs().sum()) == 0.0 for n in branch)
    assert all(float(scores["all"][n].abs().sum()) > 0.0 for n in branch)

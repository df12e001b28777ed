"""pruning with files and processes: the saved checkpoint is plain ultralytics (loads, predicts, validates and
exports to ONNX in a process where this project cannot be imported), fine-tuning keeps the pruned architecture,
and the input checkpoint is never changed."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import hide_project

import fxgraph
import pruning
from fxgraph import stats

IMGSZ = 64
NAMES = ("red", "green")


def write_dataset(root: Path, n: int = 4, size: int = IMGSZ) -> Path:
    """A tiny detection dataset in ultralytics format: coloured rectangles on grey, two classes."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((size, size, 3), 40, np.uint8)
            lines = []
            for cls in range(2):
                w, h = (int(v) for v in rng.integers(12, 28, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                img[y : y + h, x : x + w] = (200, 60, 60) if cls == 0 else (60, 200, 60)
                lines.append(f"{cls} {(x + w / 2) / size:.5f} {(y + h / 2) / size:.5f} {w / size:.5f} {h / size:.5f}")
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), img)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(NAMES))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return root / "data.yaml"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pruning_io")


@pytest.fixture(scope="module")
def data(workdir) -> Path:
    return write_dataset(workdir / "data")


@pytest.fixture(scope="module")
def source(workdir) -> Path:
    """A user's checkpoint: a 2-class YOLOv8n, saved the ultralytics way."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval()
    model.names = dict(enumerate(NAMES))
    return pruning.save_checkpoint(model, workdir / "user" / "best.pt")


@pytest.fixture(scope="module")
def pruned(source) -> pruning.Pruned:
    return pruning.prune(source, imgsz=IMGSZ, ratio=0.3, round_to=4)


def test_bad_plans_raise_and_leave_the_checkpoint_unchanged(source, pruned, workdir):
    digest = sha256(source)
    with pytest.raises(pruning.RatioError, match=r"ratio must be in \[0, 1\) .*; got 1.0"):
        pruning.prune(source, imgsz=IMGSZ, ratio=1.0)
    with pytest.raises(pruning.ProtectedChannelError,
                       match=r"group model.22.cv3.0.2 is protected \(Detect output conv: classes \(nc=2\)"):
        pruning.prune(source, pruning.Plan(remove={"model.22.cv3.0.2": (0,)}), imgsz=IMGSZ)
    coupling = pruning.analyze(fxgraph.trace(source, IMGSZ))
    with pytest.raises(pruning.EmptyLayerError, match=r"the plan removes all 128 channels of model.5.conv"):
        pruning.check_plan(pruning.Plan(remove={"model.5.conv": tuple(range(128))}), coupling)
    assert pruned.source == source
    for overwrite in (False, True):  # the source weights are never overwritten, even when asked
        with pytest.raises(pruning.OverwriteError, match=r"holds the weights this model was pruned from"):
            pruned.save(source, overwrite=overwrite)
    out = pruned.save(workdir / "out" / "pruned.pt")
    with pytest.raises(pruning.OverwriteError, match=r"pruned.pt exists; choose another name or pass overwrite=True"):
        pruned.save(out)
    assert sha256(source) == digest
    assert not list(source.parent.glob("*.tmp"))


SCRIPT = hide_project(4) + textwrap.dedent(
    """
    import importlib.util, json
    for m in PROJECT:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError:
            continue
        raise AssertionError(f"project package {m} is importable")
    import copy, numpy as np, torch, onnxruntime
    from ultralytics import YOLO

    weights, data, x_path = sys.argv[1:4]
    yolo = YOLO(weights)
    model = yolo.model.float().eval()
    x = torch.from_numpy(np.load(x_path))

    def first(y):  # (pred, raw) for a detector, ((pred, proto), raw) for a segmenter
        y = y[0]
        return y[0] if isinstance(y, (tuple, list)) else y

    with torch.no_grad():
        np.save("torch_out.npy", first(model(x)).numpy())
    results = yolo.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, device="cpu", verbose=False)
    if hasattr(model.model[-1], "one2one_cv2"):  # YOLO26: its one-to-one (NMS-free) branch predicts too
        results += yolo.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, device="cpu", verbose=False, nms=False)
    metrics = yolo.val(data=data, imgsz=64, batch=2, device="cpu", workers=0, plots=False, verbose=False) \
        if data != "-" else None
    onnx_path = yolo.export(format="onnx", imgsz=64, simplify=False, dynamic=False, device="cpu")
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})
    fused = copy.deepcopy(model).fuse().eval()
    with torch.no_grad():
        ref = fused(x[:1])[0]
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    e2e = {}
    if getattr(model.model[-1], "one2one_cv2", None) is not None:  # YOLO26's end-to-end export: top-k in the graph
        e2e_path = yolo.export(format="onnx", imgsz=64, simplify=False, dynamic=False, device="cpu", nms=False)
        session = onnxruntime.InferenceSession(e2e_path, providers=["CPUExecutionProvider"])
        e2e_ort = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})
        one2one = copy.deepcopy(model)
        one2one.model[-1].end2end = True
        one2one.model[-1].max_det = e2e_ort[0].shape[1]  # the exporter clamps max_det to the anchors at 64 px
        one2one = one2one.fuse().eval()
        with torch.no_grad():
            e2e_ref = one2one(x[:1])[0]
        e2e_ref = list(e2e_ref) if isinstance(e2e_ref, (tuple, list)) else [e2e_ref]
        dets, ref_dets = e2e_ort[0][0], e2e_ref[0][0].numpy()  # (k, 6 [+ nm]) rows: compared as sets, since
        rows = np.abs(dets[:, None] - ref_dets[None]).max(-1)  # top-k may order near-equal scores differently
        e2e = {"e2e_shapes": [list(o.shape) for o in e2e_ort], "e2e_ref_shapes": [list(r.shape) for r in e2e_ref],
               "e2e_diff": max([float(rows.min(1).max()), float(rows.min(0).max())] +
                               [float(np.abs(o - r.numpy()).max()) for o, r in zip(e2e_ort[1:], e2e_ref[1:])]),
               "e2e_ordered_diff": float(np.abs(dets - ref_dets).max())}
    print(json.dumps({
        "params": sum(p.numel() for p in model.parameters()),
        "packages": sorted({type(m).__module__.split(".")[0] for m in model.modules()}),
        "predicted": len(results),
        "map_key": metrics is None or "metrics/mAP50-95(B)" in metrics.results_dict,
        "onnx_outputs": len(ort),
        "onnx_diff": max(float(np.abs(o - r.numpy()).max()) for o, r in zip(ort, ref)),
        "sys_path": sys.path,
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in PROJECT),
        **e2e,
    }))
    """
)


def check_in_fresh_process(pruned: pruning.Pruned, folder: Path, data: str, e2e_values: bool = True) -> dict:
    """Save `pruned`, then load/predict/validate/export it in `python -I` from `folder`; return its report.
    `e2e_values=False`: YOLO26's end-to-end export is made and its shapes checked, but not its values (a fresh
    init's class scores tie, so its top-k selection is arbitrary; see conftest.e2e_ready_model)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = pruned.save(folder / "pruned.pt")
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    np.save(folder / "x.npy", x.numpy())
    script = folder / "check.py"
    script.write_text(SCRIPT)
    # -I: isolated mode, neither PYTHONPATH, the user site nor the script's folder or cwd enters sys.path
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-I", str(script), str(path), data, str(folder / "x.npy"), str(repo)],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not any(str(repo) == str(Path(p).resolve()) for p in report["sys_path"] if p)
    assert report["params"] == stats.num_params(pruned.graph) < pruned.report.params_before
    assert set(report["packages"]) <= {"ultralytics", "torch"} and report["loaded"] == []
    assert report["predicted"] == (2 if hasattr(pruned.model.model[-1], "one2one_cv2") else 1) and report["map_key"]
    assert report["onnx_outputs"] == len(pruned.graph.output_names)
    assert report["onnx_diff"] <= 1e-4
    if hasattr(pruned.model.model[-1], "one2one_cv2"):  # end-to-end ONNX: (1, k, 6 [+ nm]) boxes, scores, classes
        nm = pruned.graph.nm
        assert report["e2e_shapes"] == report["e2e_ref_shapes"] and report["e2e_shapes"][0][2] == 6 + nm
        assert not e2e_values or report["e2e_diff"] <= 1e-4, report["e2e_ordered_diff"]
    stored = copy.deepcopy(pruned.model).half().float().eval()  # the checkpoint holds FP16, as ultralytics's do
    with torch.no_grad():
        expected = fxgraph.reference_outputs(stored, x)[0].numpy()
    assert np.abs(np.load(folder / "torch_out.npy") - expected).max() <= 1e-4
    return report


def test_checkpoint_loads_predicts_validates_and_exports_without_the_project(pruned, data, workdir):
    check_in_fresh_process(pruned, workdir / "fresh", str(data))


def test_pruned_segmenter_loads_and_exports_without_the_project(workdir):
    seg = pruning.prune("yolov8n-seg.yaml", imgsz=IMGSZ, ratio=0.4, criterion="l1")
    assert seg.model.model[22].proto.upsample.out_channels < 64  # the Proto's ConvTranspose2d was cut too
    check_in_fresh_process(seg, workdir / "seg", "-")


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo26n.yaml", "yolo11n-seg.yaml", "yolo26n-seg.yaml"])
def test_pruned_yolo11_yolo26_load_predict_and_export_without_the_project(name, workdir):
    """C3k2, C2PSA (its split resynced), YOLO26's SPPF shortcut, both head branches (Segment26's one2one_cv4) and
    Proto26 survive a plain load; YOLO26 predicts on both branches and exports end to end too."""
    from conftest import e2e_ready_model

    model = e2e_ready_model(name)
    cut = pruning.prune(model, imgsz=IMGSZ, ratio=0.4, criterion="l1")
    assert cut.report.params_after < cut.report.params_before
    c2psa = cut.model.model[10]
    assert c2psa.c * 2 == c2psa.cv1.conv.out_channels
    check_in_fresh_process(cut, workdir / name.split(".")[0], "-")


def test_finetune_trains_the_pruned_architecture(pruned, data, workdir):
    from ultralytics import YOLO

    before = {k: v.detach().clone().float() for k, v in pruned.model.state_dict().items()}
    yolo = pruning.finetune(pruned, data=str(data), epochs=1, imgsz=IMGSZ, batch=4, workers=0, device="cpu",
                            project=str(workdir / "runs"), name="ft", exist_ok=True, plots=False, amp=False,
                            verbose=False)
    trained = YOLO(str(yolo.trainer.best)).model
    assert sum(p.numel() for p in trained.parameters()) == stats.num_params(pruned.graph)
    after = trained.float().state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape for k in before)
    changed = [k for k in before if k.endswith(".weight") and not torch.allclose(after[k], before[k], atol=1e-4)]
    assert len(changed) > 10, "training left the weights unchanged"
    assert type(trained.model[-1]).__name__ == "Detect"


def test_trainer_refuses_a_dataset_with_other_classes(pruned, workdir):
    three = write_dataset(workdir / "data3")
    text = three.read_text().replace("  1: green\n", "  1: green\n  2: blue\n")
    three.write_text(text)
    with pytest.raises(pruning.PruningError, match=r"the pruned model predicts 2 classes but the dataset .* has 3") as excinfo:
        pruning.finetune(pruned, data=str(three), epochs=1, imgsz=IMGSZ, batch=4, workers=0, device="cpu",
                         project=str(workdir / "runs"), name="ft3", exist_ok=True, plots=False, verbose=False)
    assert excinfo.type is pruning.PruningError

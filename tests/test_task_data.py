"""The job's data follows the model's task: the synthetic shapes are labelled for it, and data of another task is
refused before anything is written (issue 28, item 3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pruning import PruningError, PruningJob
from pruning.job.config import load_config
from pruning.job.datasets import dataset
from pruning.job.preflight import check_data_task
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset
from pruning.job.tasks import DataTaskError, model_task

TINY = ShapesConfig(n_train=3, n_val=2, imgsz=64, seed=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """The synthetic data of each task (a data yaml; the folder for classify)."""
    root = tmp_path_factory.mktemp("data")
    made = {task: make_shapes_dataset(root, TINY, task) for task in ("detect", "obb", "pose", "classify")}
    boxes = root / "boxes"  # the detect data with each polygon replaced by its box: 5 numbers a row
    shutil.copytree(made["detect"].parent, boxes)
    for label in (boxes / "labels").rglob("*.txt"):
        rows = [np.array(r.split()[1:], float).reshape(-1, 2) for r in label.read_text().splitlines() if r.strip()]
        cls = [r.split()[0] for r in label.read_text().splitlines() if r.strip()]
        label.write_text("".join(f"{c} {(p.min(0) + p.max(0))[0] / 2} {(p.min(0) + p.max(0))[1] / 2} "
                                 f"{np.ptp(p[:, 0])} {np.ptp(p[:, 1])}\n" for c, p in zip(cls, rows)))
    (boxes / "data.yaml").write_text((boxes / "data.yaml").read_text().replace(str(made["detect"].parent), str(boxes)))
    made["boxes"] = boxes / "data.yaml"
    return made


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime: equal before and after means nothing written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("yaml, task", [("yolo11n.yaml", "detect"), ("yolo11n-seg.yaml", "segment"),
                                        ("yolo11n-obb.yaml", "obb"), ("yolo11n-pose.yaml", "pose"),
                                        ("yolo11n-cls.yaml", "classify"), ("yolov10n.yaml", "detect"),
                                        ("yolo12n.yaml", "detect"), ("yolo26n-pose.yaml", "pose")])
def test_the_task_is_read_from_the_models_head(yaml, task):
    assert model_task(yaml) == task


def test_a_checkpoints_task_comes_from_its_head_not_its_name(tmp_path):
    import fxgraph
    from pruning import save_checkpoint

    path = save_checkpoint(fxgraph.load_ultralytics("yolov8n-obb.yaml"), tmp_path / "step0.pt", half=False)
    assert model_task(path) == "obb"


@pytest.mark.parametrize("yaml, folder", [("yolo11n-obb.yaml", "shapes-obb-"), ("yolo11n-pose.yaml", "shapes-pose-"),
                                          ("yolo11n-cls.yaml", "shapes-classify-"), ("yolo11n-seg.yaml", "shapes-")])
def test_the_job_writes_the_synthetic_data_of_the_models_task(tmp_path, monkeypatch, yaml, folder):
    """`model=<yaml>` alone picks the labels: the job's `dataset` writes the shapes of the model's task."""
    monkeypatch.chdir(tmp_path)
    settings = load_config(None, [f"model={yaml}", "pretrained=null", "pretrain_epochs=1", "imgsz=64",
                                  f"project={tmp_path / 'runs'}", "export=none"])
    path = dataset(settings)
    written = path if path.is_dir() else path.parent
    assert written.parent == tmp_path / "datasets" and written.name.startswith(folder)
    assert written.name.removeprefix(folder).isalnum()  # shapes-<hash>: detect and segment share polygons
    assert (path / "train").is_dir() if yaml.endswith("-cls.yaml") else path.name == "data.yaml"


REFUSED = [  # model, data task, what the data is said to hold
    ("yolo11n-obb.yaml", "detect", "segment/detect"),  # polygons are no rotated rectangles
    ("yolo11n-pose.yaml", "detect", "segment/detect"),  # no keypoints
    ("yolo11n-pose.yaml", "obb", "obb/segment/detect"),
    ("yolo11n-cls.yaml", "detect", "segment/detect"),  # a classifier needs class folders
    ("yolo11n.yaml", "classify", "classify"),  # a detector needs boxes
    ("yolo11n-seg.yaml", "pose", "pose/detect"),  # pose labels hold boxes, no outlines
    ("yolo11n-seg.yaml", "boxes", "detect"),  # boxes hold no outlines
    ("yolo11n-obb.yaml", "boxes", "detect"),  # nor angles
]


@pytest.mark.parametrize("yaml, data_task, holds", REFUSED)
def test_data_of_another_task_is_refused_before_anything_is_written(tmp_path, monkeypatch, data, yaml, data_task,
                                                                    holds):
    monkeypatch.chdir(tmp_path)
    source = data[data_task]
    (tmp_path / "runs").mkdir()
    before, data_before = _listing(tmp_path), _listing(source.parents[1] if source.is_file() else source.parent)
    task = model_task(yaml)
    with pytest.raises(DataTaskError, match=(rf"^data={source} holds {holds} labels but model={yaml} is a model "
                                             rf"for {task}: give data labelled for {task}, or leave data unset")):
        PruningJob(cfg=dict(model=yaml, pretrained=None, pretrain_epochs=1, imgsz=64, batch=2, export="none",
                                 project=str(tmp_path / "runs"), data=str(source))).run()
    assert issubclass(DataTaskError, PruningError)
    assert _listing(tmp_path) == before
    assert _listing(source.parents[1] if source.is_file() else source.parent) == data_before


@pytest.mark.parametrize("yaml, data_task", [("yolo11n.yaml", "detect"), ("yolo11n-seg.yaml", "detect"),
                                             ("yolo11n-obb.yaml", "obb"), ("yolo11n.yaml", "obb"),
                                             ("yolo11n-pose.yaml", "pose"), ("yolo11n.yaml", "pose"),
                                             ("yolo11n-cls.yaml", "classify"), ("yolo11n.yaml", "boxes")])
def test_data_that_serves_the_models_task_passes(tmp_path, data, yaml, data_task):
    """What ultralytics's own trainers accept: detect trains on polygons, rotated rectangles and pose boxes."""
    settings = load_config(None, [f"model={yaml}", "pretrained=null", "pretrain_epochs=1", "imgsz=64",
                                  f"project={tmp_path / 'runs'}", f"data={data[data_task]}"])
    assert check_data_task(settings) == model_task(yaml)


def test_a_pose_model_pruned_as_it_is_needs_the_datas_keypoints(tmp_path, monkeypatch, data):
    """A 17-keypoint checkpoint with pretrain_epochs=0 cannot take the shapes' 5 tips: refused, nothing written;
    with pretrain_epochs > 0 ultralytics's trainer gives it a head for them, so it passes."""
    import fxgraph
    from pruning import save_checkpoint

    weights = save_checkpoint(fxgraph.load_ultralytics("yolov8n-pose.yaml"), tmp_path / "coco-pose.pt", half=False)
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    for source, shown in ((None, "the synthetic shapes"), (data["pose"], data["pose"])):
        settings = dict(pretrained=str(weights), pretrain_epochs=0, imgsz=64, export="none",
                        project=str(tmp_path / "runs"), data=None if source is None else str(source))
        with pytest.raises(DataTaskError, match=rf"^pretrained={weights} predicts keypoints of shape \[17, 3\] "
                                                rf"but data={shown} has kpt_shape \[5, 3\]: a pruned head cannot"):
            PruningJob(cfg=settings).run()
        assert _listing(tmp_path) == before
        assert check_data_task(load_config(None, [f"{k}={v}" for k, v in {**settings, "pretrain_epochs": 1}.items()
                                                  if v is not None])) == "pose"

"""The pruning job end to end on pose, OBB and classify (issue 28, item 3): one pruned step of a random-weight model
with the data's classes (and keypoints), fine-tuned one epoch with the task's pruned-model trainer, a report with the
task's own quality metric (pruning.job.metrics.primary), ONNX; tiny data at imgsz 64.  (Training from a yaml first is
the same ultralytics trainer for every task: tests/test_pipeline.py runs it.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import fxgraph
from pruning import save_checkpoint
from pruning.job import pipeline
from pruning.job.config import ConfigError, load_config
from pruning.job.metrics import PRIMARY, primary
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

# task -> (model yaml, criterion): a different criterion per task, each going through the job's registry
CASES = {"pose": ("yolov8n-pose.yaml", "l1"), "obb": ("yolov8n-obb.yaml", "taylor"),
         "classify": ("yolov8n-cls.yaml", "detdshap")}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def task_data(root: Path, task: str) -> Path:
    """The synthetic shapes labelled for `task` (a data yaml; classify: a folder of class folders), written once."""
    return make_shapes_dataset(root, ShapesConfig(n_train=8, n_val=4, imgsz=64, seed=1), task=task)


def start_weights(folder: Path, task: str, model: str) -> Path:
    """A random-weight checkpoint of `model` for the synthetic data of `task` (4 shapes; pose: stars, 5 tips)."""
    from ultralytics.nn.tasks import ClassificationModel, OBBModel, PoseModel

    torch.manual_seed(0)
    build = {"pose": lambda: PoseModel(model, nc=1, data_kpt_shape=(5, 3), verbose=False),
             "obb": lambda: OBBModel(model, nc=4, verbose=False),
             "classify": lambda: ClassificationModel(model, nc=4, verbose=False)}[task]
    return save_checkpoint(build().eval(), folder / f"{task}.pt", half=False)


def _settings(tmp_path: Path, data: Path, weights: Path, criterion: str):
    base = dict(pretrained=str(weights), data=str(data), imgsz=64, batch=4, pretrain_epochs=0, criterion=criterion,
                step_ratio=0.2, target=0.1, max_steps=1, epochs_per_step=1, final_epochs=0, calib_images=4,
                project=str(tmp_path / "runs"), name="exp", latency_imgsz=64, latency_repeats=1)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


@pytest.mark.parametrize("task", list(CASES))
def test_the_job_runs_end_to_end_on_each_task(tmp_path, shapes, task):
    from ultralytics import YOLO

    model, criterion = CASES[task]
    weights = start_weights(tmp_path, task, model)
    out = pipeline.run(_settings(tmp_path, task_data(shapes, task), weights, criterion))
    rows = json.loads((out / "report.json").read_text())["steps"]
    assert [r["step"] for r in rows] == [0, 1]
    metric = PRIMARY[task]
    for row in rows:
        assert row["task"] == task and 0.0 <= primary(row) <= 1.0 and primary(row) == row[metric.key]
    assert rows[1]["params"] < rows[0]["params"]
    report = (out / "report.md").read_text()
    assert f"{metric.label} {primary(rows[0]):.3f} -> {primary(rows[1]):.3f}" in report
    assert ("top-1" in report) == (task == "classify") and ("pose mAP50-95" in report) == (task == "pose")
    weights = out / "weights" / "step1.pt"  # fine-tuned by the task's pruned-model trainer
    assert (out / "weights" / "step1.onnx").is_file()
    pruned = YOLO(str(weights))
    assert pruned.task == task
    start = fxgraph.load_ultralytics(out / "weights" / "step0.pt")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pruned.model) == rows[1]["params"] < count(start)
    assert json.loads((out / "state.json").read_text())["done"] is True


def test_a_classifier_with_other_classes_than_its_folder_is_refused(tmp_path, shapes):
    """check_weights on a classifier: its Linear's classes against the class folders, before anything is written."""
    weights = save_checkpoint(fxgraph.load_ultralytics("yolov8n-cls.yaml"), tmp_path / "cls.pt", half=False)
    data = task_data(shapes, "classify")
    settings = dict(pretrained=str(weights), data=str(data), pretrain_epochs=0, imgsz=64,
                    project=str(tmp_path / "runs"))
    with pytest.raises(ConfigError, match=rf"pretrained={weights} predicts 1000 classes but data={data} has 4: a "
                                          r"pruned head cannot be re-sized"):
        pipeline.PruningJob(cfg=settings).run()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("task, fell, held", [("pose", "map50_95_pose", "map50_95"), ("classify", "top1", "top5"),
                                              ("detect", "map50_95", "map50_95_pose")])
def test_max_map_drop_reads_the_tasks_own_metric(tmp_path, task, fell, held):
    """The stop rule compares the task's metric (pose mAP50-95, top-1, box mAP50-95), not whichever map50_95."""
    job = pipeline.PruningJob(cfg=dict(max_map_drop=0.1, target=0.9, max_steps=9, project=str(tmp_path / "runs")))
    base = {"step": 0, "task": task, "params": 100, "gflops": 1.0, fell: 0.8, held: 0.8}
    job.state = {"step": 1, "rows": [base, {**base, "step": 1, "params": 90, "gflops": 0.9, fell: 0.6}]}
    assert job._stop_reason() == f"{PRIMARY[task].label} fell 0.200 below the start"
    job.state["rows"][1] = {**base, "step": 1, "params": 90, "gflops": 0.9, held: 0.1}
    assert job._stop_reason() is None

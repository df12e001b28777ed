"""Each task's pruned-model trainer fine-tunes the architecture it is given (a conv narrowed by hand) on the synthetic
data of its task, where ultralytics's own trainer would rebuild the unpruned one from the yaml, and the job reads each
task's validation metrics (issue 28, item 3)."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from pruning import PruningError, save_checkpoint
from pruning.job.metrics import val_metrics
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset
from pruning.job.train import (PrunedClassificationTrainer, PrunedDetectionTrainer, PrunedOBBTrainer,
                               PrunedPoseTrainer, PrunedSegmentationTrainer, check_head_fits, finetune, trainer_for)

DATA = ShapesConfig(n_train=8, n_val=4, imgsz=64, seed=0)
KEEP = 5  # of the first conv's 16 output channels


def _model(task: str) -> nn.Module:
    """A random-weight yolo11n of `task` with the classes (and keypoints) of the synthetic data."""
    from ultralytics.nn.tasks import ClassificationModel, OBBModel, PoseModel

    build = {"pose": lambda: PoseModel("yolo11n-pose.yaml", nc=1, data_kpt_shape=(5, 3), verbose=False),
             "obb": lambda: OBBModel("yolo11n-obb.yaml", nc=4, verbose=False),
             "classify": lambda: ClassificationModel("yolo11n-cls.yaml", nc=4, verbose=False)}
    return build[task]()


def _narrow_first_conv(model: nn.Module, keep: int) -> None:
    """Hand surgery: keep the first `keep` output channels of layer 0 (conv and BatchNorm) and the matching input
    channels of layer 1, as a pruning plan would."""
    first, second = model.model[0], model.model[1]
    first.conv.weight = nn.Parameter(first.conv.weight[:keep].clone())
    first.conv.out_channels = keep
    bn = first.bn
    bn.weight, bn.bias = nn.Parameter(bn.weight[:keep].clone()), nn.Parameter(bn.bias[:keep].clone())
    bn.running_mean, bn.running_var = bn.running_mean[:keep].clone(), bn.running_var[:keep].clone()
    bn.num_features = keep
    second.conv.weight = nn.Parameter(second.conv.weight[:, :keep].clone())
    second.conv.in_channels = keep


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("task, imgsz", [("pose", 64), ("obb", 64), ("classify", 64)])
def test_each_tasks_trainer_keeps_a_hand_pruned_architecture_through_an_epoch(tmp_path, task, imgsz):
    from ultralytics import YOLO

    data = make_shapes_dataset(tmp_path / "datasets", DATA, task)
    model = _model(task)
    _narrow_first_conv(model, KEEP)
    with torch.no_grad():  # the surgery is consistent: the narrowed model runs
        model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = save_checkpoint(model, tmp_path / "pruned.pt", half=False)
    start = time.perf_counter()
    yolo = finetune(str(path), data=str(data), epochs=1, imgsz=imgsz, batch=4, workers=0, device="cpu",
                    project=str(tmp_path / "runs"), name=task, exist_ok=True, plots=False, verbose=False, amp=False)
    print(f"{task}: one epoch fine-tuning in {time.perf_counter() - start:.1f} s")
    assert isinstance(yolo.trainer, trainer_for(task))
    trained = YOLO(str(yolo.trainer.last)).model
    assert trained.model[0].conv.out_channels == KEEP and trained.model[1].conv.in_channels == KEEP
    assert _shapes(trained) == {k: tuple(v.shape) for k, v in before.items()}  # every module as pruned
    changed = [k for k, v in trained.state_dict().items() if v.dtype.is_floating_point
               and not torch.equal(v.float(), before[k].float())]
    assert any(k.endswith("weight") for k in changed)  # it was trained, not just copied
    # the job's report row reads the task's metrics as ultralytics's trainer reported them after its final val
    row, reported = val_metrics(yolo.trainer.validator.metrics), yolo.trainer.metrics
    assert set(row) == set(ROW_METRICS[task])
    for ours, theirs in ROW_METRICS[task].items():
        if theirs is not None:
            assert row[ours] == pytest.approx(reported[theirs], abs=1e-6), (ours, theirs)


BOX = {"map50": "metrics/mAP50(B)", "map50_95": "metrics/mAP50-95(B)", "precision": "metrics/precision(B)",
       "recall": "metrics/recall(B)", "f1": None}
ROW_METRICS = {"pose": {**BOX, "map50_pose": "metrics/mAP50(P)", "map50_95_pose": "metrics/mAP50-95(P)"},
               "obb": BOX, "classify": {"top1": "metrics/accuracy_top1", "top5": "metrics/accuracy_top5"}}


@pytest.mark.parametrize("task, trainer", [("detect", PrunedDetectionTrainer), ("segment", PrunedSegmentationTrainer),
                                           ("pose", PrunedPoseTrainer), ("obb", PrunedOBBTrainer),
                                           ("classify", PrunedClassificationTrainer)])
def test_one_trainer_per_task_through_the_same_mixin(task, trainer):
    from ultralytics.models import yolo

    base = {"detect": yolo.detect.DetectionTrainer, "segment": yolo.segment.SegmentationTrainer,
            "pose": yolo.pose.PoseTrainer, "obb": yolo.obb.OBBTrainer,
            "classify": yolo.classify.ClassificationTrainer}[task]
    assert trainer_for(task) is trainer and issubclass(trainer, base)
    assert trainer.get_model is PrunedDetectionTrainer.get_model  # the mixin's, in front of the task's own
    with pytest.raises(PruningError, match=r"no pruned-model trainer for task 'depth'; supported: \['classify', "):
        trainer_for("depth")


def test_a_head_that_does_not_fit_the_data_is_refused():
    pose = _model("pose").model[-1]
    check_head_fits(pose, {"nc": 1, "kpt_shape": [5, 3]}, "shapes-pose")
    with pytest.raises(PruningError, match=r"predicts keypoints of shape \[5, 3\] but the dataset coco8-pose has "
                                           r"kpt_shape \[17, 3\]; fine-tune on data with the model's keypoints"):
        check_head_fits(pose, {"nc": 1, "kpt_shape": [17, 3]}, "coco8-pose")
    classify = _model("classify").model[-1]
    check_head_fits(classify, {"nc": 4}, "shapes-classify")
    with pytest.raises(PruningError, match="the pruned model predicts 4 classes but the dataset imagenette has 10; a "
                                           "pruned head cannot be re-sized"):
        check_head_fits(classify, {"nc": 10}, "imagenette")

"""What the pruning job refuses, before writing anything: bad settings, weights, data, device and project (issue 16,
kind 3); a second process on a run, and a resume with other settings than the run's (kind 5)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import fxgraph
from pruning import PruningError, save_checkpoint
from pruning.job import pipeline
from pruning.job.config import ConfigError, load_config
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Weights (a detector, a classifier, an OBB model, garbage), tiny box and pose datasets, and data yamls that lack
    images."""
    root = tmp_path_factory.mktemp("inputs")
    made = {"data": make_shapes_dataset(root, ShapesConfig(n_train=4, n_val=2, imgsz=64, seed=1)),
            "pose_data": make_shapes_dataset(root, ShapesConfig(n_train=4, n_val=2, imgsz=64, seed=1), task="pose")}
    for key, yaml in (("detect", "yolov8n.yaml"), ("classify", "yolov8n-cls.yaml"), ("obb", "yolov8n-obb.yaml")):
        made[key] = save_checkpoint(fxgraph.load_ultralytics(yaml), root / f"{key}.pt", half=False)
    made["garbage"] = root / "garbage.pt"
    made["garbage"].write_bytes(b"\x00 not a checkpoint" * 8)
    made["no_images"] = root / "missing.yaml"
    made["no_images"].write_text(f"path: {root / 'nowhere'}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    (root / "empty" / "images" / "train").mkdir(parents=True)
    (root / "empty" / "images" / "val").mkdir(parents=True)
    made["empty"] = root / "empty.yaml"
    made["empty"].write_text(f"path: {root / 'empty'}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    return made


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime: equal before and after means nothing written."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


SETTINGS_CASES = [
    ("baseline=white", "baseline='white' must be black, blur or a constant grey in [0, 1]"),
    ("baseline=1.5", "baseline=1.5 must be black, blur or a constant grey in [0, 1]"),
    ("iou=0", "iou=0 must be a number in (0, 1]"),
    ("iou=5", "iou=5 must be a number in (0, 1]"),
    ("compare_criteria=detdshap", "compare_criteria='detdshap' must be a non-empty list of criteria, e.g. "
                                  "compare_criteria=[detdshap]"),
    ("compare_criteria=[l1,l1]", "a criterion is listed twice"),
    ("device=foo", "device='foo': device 'foo' is not understood"),
]
if not torch.cuda.is_available():
    SETTINGS_CASES += [("device=cuda", "device='cuda': no CUDA GPU is available here; use device=cpu"),
                       ("device=0", "device=0: no CUDA GPU is available here; use device=cpu")]


@pytest.mark.parametrize("override, message", SETTINGS_CASES)
def test_bad_settings_are_refused_by_name(tmp_path, monkeypatch, override, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(None, [override, f"project={tmp_path / 'runs'}"])
    assert message in str(err.value)
    assert list(tmp_path.iterdir()) == []


def _bad_inputs(inputs: dict[str, Path], tmp: Path) -> dict[str, tuple[dict, str]]:
    det, data = inputs["detect"], inputs["data"]
    (tmp / "a_file").write_text("")
    return {
        "garbage": (dict(pretrained=inputs["garbage"]), f"pretrained={inputs['garbage']}: not a readable "
                                                        f"ultralytics checkpoint"),
        "classifier_box": (dict(pretrained=inputs["classify"], data=None, criterion="detdshap", calib_target="box"),
                           f"criterion=detdshap with calib_target=box explains box coordinates, but "
                           f"pretrained={inputs['classify']} is a classifier (no boxes): use calib_target=class or "
                           f"all"),
        "pose_data_for_obb": (dict(pretrained=inputs["obb"], data=inputs["pose_data"], pretrain_epochs=1),
                              f"data={inputs['pose_data']} holds pose/detect labels but pretrained={inputs['obb']} is "
                              f"a model for obb: give data labelled for obb"),
        "rtdetr_yaml": (dict(pretrained=None, model="rtdetr-l.yaml", pretrain_epochs=1, data=None),
                        "model=rtdetr-l.yaml cannot be pruned: RTDETRDetectionModel ends in RTDETRDecoder"),
        "imgsz": (dict(pretrained=det, imgsz=100), f"imgsz=100 is not a multiple of the largest stride 32 of "
                                                   f"pretrained={det}; use imgsz=96 or 128"),
        "images_missing": (dict(pretrained=det, data=inputs["no_images"]),
                           f"data={inputs['no_images']}: ultralytics cannot use it (Dataset '{inputs['no_images']}' "
                           f"images not found"),
        "images_empty": (dict(pretrained=det, data=inputs["empty"]),
                         f"data={inputs['empty']}: no images in its 'train' split"),
        "classes": (dict(pretrained=det, data=data), f"pretrained={det} predicts 80 classes but data={data} has 4: a "
                                                     f"pruned head cannot be re-sized"),
        "project_file": (dict(pretrained=det, data=data, project=tmp / "a_file" / "runs"),
                         f"project={tmp / 'a_file' / 'runs'}: {tmp / 'a_file'} is a file, not a folder"),
    }


@pytest.mark.parametrize("name", ["garbage", "classifier_box", "pose_data_for_obb", "rtdetr_yaml", "imgsz",
                                  "images_missing", "images_empty", "classes", "project_file"])
def test_bad_weights_data_and_project_are_refused_before_the_run_directory_exists(tmp_path, inputs, monkeypatch,
                                                                                   name):
    """Our ConfigError naming the user's own path and what to do; no run folder, datasets, step0.pt, state.json or
    report appears anywhere (cwd, project, or beside the inputs)."""
    monkeypatch.chdir(tmp_path)
    case, message = _bad_inputs(inputs, tmp_path)[name]
    settings = {**dict(pretrain_epochs=0, imgsz=64, batch=2, export="none", project=tmp_path / "runs",
                       data=inputs["data"]), **case}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}
    before, inputs_before = _listing(tmp_path), _listing(inputs["data"].parents[1])
    with pytest.raises(ConfigError) as err:
        pipeline.Pruner(cfg=settings).run()
    assert message in str(err.value)
    assert "step0.pt" not in str(err.value)  # the user's path, never the run's copy
    assert _listing(tmp_path) == before and _listing(inputs["data"].parents[1]) == inputs_before
    assert not (tmp_path / "runs").exists() and not (tmp_path / "datasets").exists()


def test_unwritable_project_is_refused(tmp_path, inputs):
    project = Path("/sys/detdshap-runs")  # read-only even for root (chmod is no test when tests run as root)
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    with pytest.raises(ConfigError, match=r"project=/sys/detdshap-runs: cannot write in folder /sys, creating a "
                                          r"file there failed \(.*\); choose a writable location"):
        pipeline.Pruner(pretrained=str(inputs["detect"]), data=str(inputs["data"]), pretrain_epochs=0,
                        project=str(project), imgsz=64).run()
    assert not project.exists()


def test_cli_refuses_a_classifier_on_box_labels_with_one_line_and_writes_nothing(tmp_path, inputs):
    res = subprocess.run([sys.executable, "-m", "pruning", "--pretrained", str(inputs["classify"]), "pretrain_epochs=0",
                          f"data={inputs['data']}", f"project={tmp_path / 'runs'}", "imgsz=64"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert (f"error: data={inputs['data']} holds segment/detect labels but pretrained={inputs['classify']} is a model "
            f"for classify") in res.stderr
    assert list(tmp_path.iterdir()) == []


# --- kind 5: one process per run, and a resume only with the run's own settings ---------------------------------

@pytest.fixture
def finished_run(tmp_path, monkeypatch) -> tuple[Path, object]:
    """A run directory whose state.json says it finished, with the settings it was started with; the input checks
    are skipped here (the refusals below come before any of the run's work)."""
    monkeypatch.setattr(pipeline, "check_inputs", lambda settings: None, raising=False)
    settings = load_config(None, ["criterion=l1", "target=0.3", f"project={tmp_path / 'runs'}", "name=exp",
                                  "export=none"])
    out = tmp_path / "runs" / "exp"
    (out / "weights").mkdir(parents=True)
    state = {"settings": settings.to_dict(), "rows": [], "step": 2, "done": True, "stop": "target reached",
             "stages": []}
    (out / "state.json").write_text(json.dumps(state, indent=2))
    return out, settings


def test_resume_with_changed_settings_is_refused_naming_them(finished_run):
    out, settings = finished_run
    before = _listing(out)
    with pytest.raises(PruningError) as err:
        pipeline.run(settings.replace(resume=True, criterion="taylor", target=0.5, workers=2))
    assert type(err.value).__name__ == "ResumeError"
    message = str(err.value)
    assert f"resume: {out} was started with criterion='l1', target=0.3; this call gives criterion='taylor', " \
           f"target=0.5" in message
    assert "only resume, device, workers, calib_batch, calib_chunk may change" in message and "workers=" not in message
    assert _listing(out) == before  # the finished run is untouched (no lock file, no report, state unchanged)


def test_resume_with_only_changeable_settings_goes_on(finished_run, caplog):
    out, settings = finished_run
    assert pipeline.run(settings.replace(resume=True, workers=2, calib_batch=3)) == out
    assert json.loads((out / "state.json").read_text())["done"] is True


def test_a_second_process_on_a_run_is_refused_naming_the_holder(finished_run):
    out, settings = finished_run
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pruning.job.runlock import RunLock; "
                               "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
         str(out)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _listing(out)
        with pytest.raises(PruningError) as err:
            pipeline.run(settings.replace(resume=True))
        assert type(err.value).__name__ == "RunLockedError"
        host = socket.gethostname()
        assert f"{out} is in use by pid {holder.pid} on host {host} since " in str(err.value)
        assert _listing(out) == before
    finally:
        holder.kill()
        holder.wait()
    assert pipeline.run(settings.replace(resume=True)) == out  # the kernel dropped the dead holder's lock
    recorded = json.loads((out / "run.lock").read_text())
    assert recorded["pid"] == os.getpid()


def test_a_lock_file_left_by_a_dead_process_is_taken_over(finished_run):
    out, settings = finished_run
    (out / "run.lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": "elsewhere", "since": "2026-01-01"}))
    assert pipeline.run(settings.replace(resume=True)) == out
    assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()


def test_a_running_pruner_holds_its_lock_in_process_too(finished_run):
    from pruning.job.runlock import RunLock, RunLockedError

    out, settings = finished_run
    with RunLock(out):
        with pytest.raises(RunLockedError, match=f"is in use by pid {os.getpid()} "):
            pipeline.run(settings.replace(resume=True))

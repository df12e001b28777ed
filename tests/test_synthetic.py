"""The synthetic dataset is deterministic, reusable, and in the format ultralytics reads for each task: the boxes,
angles, keypoints and crops its own dataset classes read back are the shapes drawn."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pruning import PruningError
from pruning.job.synthetic import (CLASSES, FLIP_IDX, KPT_SHAPE, POSE_CLASSES, ShapesConfig, crop_box, keypoint_rows,
                                   make_shapes_dataset, samples, star_tips)


def _digest(folder):
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "data.yaml":
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    cfg = ShapesConfig(n_train=4, n_val=2, imgsz=64, seed=3)
    a = make_shapes_dataset(tmp_path / "a", cfg).parent
    b = make_shapes_dataset(tmp_path / "b", cfg).parent
    c = make_shapes_dataset(tmp_path / "c", ShapesConfig(n_train=4, n_val=2, imgsz=64, seed=4)).parent
    assert _digest(a) == _digest(b) != _digest(c)


def test_second_call_reuses_the_dataset(tmp_path):
    cfg = ShapesConfig(n_train=2, n_val=1, imgsz=64)
    first = make_shapes_dataset(tmp_path, cfg)
    stamp = first.stat().st_mtime_ns
    assert make_shapes_dataset(tmp_path, cfg) == first and first.stat().st_mtime_ns == stamp
    assert len(list(tmp_path.iterdir())) == 1  # no temporary folder left behind


def test_labels_are_valid_polygons_and_ultralytics_reads_them(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    data = make_shapes_dataset(tmp_path, ShapesConfig(n_train=6, n_val=3, imgsz=64))
    info = check_det_dataset(str(data))
    assert info["nc"] == len(CLASSES)
    for label in (data.parent / "labels" / "train").glob("*.txt"):
        for line in label.read_text().split("\n"):
            if not line:
                continue
            cls, *coords = line.split()
            values = np.array(coords, dtype=float)
            assert 0 <= int(cls) < len(CLASSES) and len(values) % 2 == 0 and len(values) >= 6
            assert values.min() >= 0 and values.max() <= 1


# --- every task's labels, read back by ultralytics's own dataset classes and compared with the shapes drawn ---

TINY = ShapesConfig(n_train=6, n_val=2, imgsz=64, seed=5)


def _yolo_dataset(data, task: str):
    """ultralytics's YOLODataset over the train split, without augmentation, at the images' own size."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    info = check_det_dataset(str(data))
    return YOLODataset(img_path=info["train"], imgsz=TINY.imgsz, augment=False, hyp=get_cfg(), rect=False,
                       batch_size=1, stride=32, data=info, task=task)


def _train_records():
    return [shapes for split, _, _, shapes in samples(TINY) if split == "train"]


def _min_rect_area(points: np.ndarray) -> float:
    """Rotating calipers: the smallest rectangle has a side along an edge of the convex hull."""
    hull = cv2.convexHull(points.astype(np.float32))[:, 0, :].astype(np.float64)
    best = math.inf
    for a, b in zip(hull, np.roll(hull, -1, 0)):
        u = (b - a) / np.linalg.norm(b - a)
        v = np.array([-u[1], u[0]])
        best = min(best, np.ptp(points @ u) * np.ptp(points @ v))
    return best


def _angle_gap(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


def test_obb_labels_are_each_shapes_minimum_area_rectangle_at_its_drawn_angle(tmp_path):
    from ultralytics.utils.ops import xywhr2xyxyxyxy

    ds = _yolo_dataset(make_shapes_dataset(tmp_path, TINY, "obb"), "obb")
    records = _train_records()
    checked_angles = 0
    for i, shapes in enumerate(records):
        item = ds[i]
        xywhr = item["bboxes"].double() * torch.tensor([TINY.imgsz] * 4 + [1.0], dtype=torch.float64)
        assert item["cls"].view(-1).int().tolist() == [s.cls for s in shapes]
        for s, box in zip(shapes, xywhr):
            corners = xywhr2xyxyxyxy(box[None])[0].numpy()
            w, h, r = float(box[2]), float(box[3]), float(box[4])
            assert w * h == pytest.approx(_min_rect_area(s.polygon), rel=2e-3)  # the smallest rectangle ...
            centre = corners.mean(0)
            axes = np.array([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]])
            local = (s.polygon - centre) @ axes.T
            assert np.all(np.abs(local) <= np.array([w, h]) / 2 + 0.02)  # ... holding the whole shape
            if s.name == "square":  # its sides lie at the drawn angle
                assert _angle_gap(r, s.angle, math.pi / 2) < 1e-3
                checked_angles += 1
            elif s.name == "triangle":  # one side along an edge, at drawn angle + 5 pi/6 (mod pi/3)
                assert _angle_gap(r, s.angle + 5 * math.pi / 6, math.pi / 6) < 1e-3
                checked_angles += 1
    assert checked_angles >= 2


def test_pose_labels_are_each_stars_five_tips_and_flip_idx_mirrors_them(tmp_path):
    from ultralytics.data.augment import RandomFlip
    from ultralytics.utils.instance import Instances

    data = make_shapes_dataset(tmp_path, TINY, "pose")
    ds = _yolo_dataset(data, "pose")
    assert ds.data["kpt_shape"] == list(KPT_SHAPE) and ds.data["flip_idx"] == list(FLIP_IDX)
    assert ds.data["names"] == dict(enumerate(POSE_CLASSES))
    stars = 0
    for i, shapes in enumerate(_train_records()):
        item = ds[i]
        expected = [star_tips(s.polygon) for s in shapes if s.name == "star"]
        kpts = item["keypoints"].double().numpy()
        assert kpts.shape == (len(expected), *KPT_SHAPE) and item["cls"].view(-1).tolist() == [0] * len(expected)
        for got, tips in zip(kpts, expected):
            stars += 1
            np.testing.assert_allclose(got[:, :2] * TINY.imgsz, tips, atol=2e-3)
            assert got[:, 2].tolist() == [2.0] * 5
            assert np.argmin(tips[:, 1]) == 0  # the topmost tip first ...
            rel = tips - tips.mean(0)
            nxt = np.roll(rel, -1, 0)
            assert np.all(rel[:, 0] * nxt[:, 1] - rel[:, 1] * nxt[:, 0] > 0)  # ... then clockwise on screen (y down)
            # ultralytics's own horizontal flip with flip_idx gives the mirrored star's tips in the same order
            inst = Instances(np.zeros((1, 4), np.float32), np.zeros((1, 0, 2), np.float32),
                             got[None].astype(np.float32), bbox_format="xywh", normalized=True)
            flipped = RandomFlip(p=1.0, direction="horizontal", flip_idx=list(FLIP_IDX))(
                {"img": np.zeros((TINY.imgsz, TINY.imgsz, 3), np.uint8), "instances": inst})["instances"]
            mirrored = next(s for s in shapes if s.name == "star" and np.allclose(star_tips(s.polygon), tips))
            mirror = mirrored.polygon * [-1, 1] + [TINY.imgsz, 0]
            np.testing.assert_allclose(flipped.keypoints[0, :, :2] * TINY.imgsz, star_tips(mirror), atol=2e-3)
    assert stars >= 2


def test_keypoints_outside_the_image_are_invisible_zeros():
    tips = np.array([[10.0, 5.0], [70.0, 20.0], [30.0, -1.0], [64.0, 64.0], [0.0, 0.0]])
    rows = keypoint_rows(tips, 64)
    np.testing.assert_allclose(rows, [[10 / 64, 5 / 64, 2], [0, 0, 0], [0, 0, 0], [1, 1, 2], [0, 0, 2]])


def test_classification_split_is_one_crop_per_shape_in_its_class_folder(tmp_path):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset
    from ultralytics.data.utils import check_cls_dataset

    folder = make_shapes_dataset(tmp_path, TINY, "classify")
    info = check_cls_dataset(str(folder))
    assert sorted(info["names"].values()) == sorted(CLASSES)
    ds = ClassificationDataset(root=str(folder / "train"), args=get_cfg(overrides={"imgsz": TINY.imgsz}),
                               augment=False, prefix="train")
    drawn = {f"{i:05d}_{k}": (img, s) for split, i, img, shapes in samples(TINY) if split == "train"
             for k, s in enumerate(shapes)}
    read = {Path(f).stem: (Path(f), idx) for f, idx, *_ in ds.samples}
    assert read.keys() == drawn.keys()  # one crop per shape
    for stem, (path, idx) in read.items():
        img, shape = drawn[stem]
        assert ds.base.classes[idx] == shape.name == path.parent.name
        x0, y0, x1, y1 = crop_box(shape, TINY.imgsz)
        np.testing.assert_array_equal(cv2.imread(str(path)), img[y0:y1, x0:x1])
        inside = np.clip(shape.polygon, 0, TINY.imgsz - 1)
        assert np.all(inside >= [x0, y0]) and np.all(inside <= [x1, y1])  # the whole shape is in the crop


def test_each_task_has_its_own_cached_folder_and_unknown_tasks_are_refused(tmp_path):
    paths = {task: make_shapes_dataset(tmp_path, TINY, task) for task in ("detect", "obb", "pose", "classify")}
    assert make_shapes_dataset(tmp_path, TINY, "segment") == paths["detect"]  # polygons serve both
    assert len({p if p.is_dir() else p.parent for p in paths.values()}) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"shapes{t}-{TINY.key()}" for t in ("", "-obb", "-pose", "-classify"))
    with pytest.raises(PruningError, match="no synthetic shapes dataset for task 'depth'; tasks: detect, segment"):
        make_shapes_dataset(tmp_path, TINY, "depth")
    assert len(list(tmp_path.iterdir())) == 4

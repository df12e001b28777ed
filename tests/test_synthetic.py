"""The synthetic dataset is deterministic, reusable, and in a format ultralytics reads for detect and segment."""

from __future__ import annotations

import hashlib

import numpy as np

from pruning.job.synthetic import CLASSES, ShapesConfig, make_shapes_dataset


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

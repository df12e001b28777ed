"""The tiled deepforest trees dataset: tile coordinates, every box kept exactly where the overlap rule says, and
train/val tiles cut from disjoint source images."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from pruning.errors import PruningError
from pruning.job.trees import TreesConfig, deepforest_data_dir, make_trees_dataset, read_voc, sources, tile_origins

TILE = re.compile(r"(?P<stem>.+)_x(?P<x>\d+)_y(?P<y>\d+)$")


def test_tile_origins_step_by_stride_and_end_flush():
    assert tile_origins(400, 320, 64) == [0, 80]
    assert tile_origins(320, 320, 64) == [0]
    assert tile_origins(200, 320, 64) == [0]
    starts = tile_origins(2299, 320, 64)
    assert starts[:3] == [0, 256, 512] and starts[-1] == 2299 - 320
    assert all(0 < b - a <= 256 for a, b in zip(starts, starts[1:]))  # consecutive tiles overlap by >= 64 px
    with pytest.raises(PruningError, match="overlap=320 must be in"):
        tile_origins(400, 320, 320)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    try:
        data_dir = deepforest_data_dir()
    except PruningError:
        pytest.skip("deepforest (the `data` extra) is not installed")
    cfg = TreesConfig()
    return cfg, data_dir, make_trees_dataset(tmp_path_factory.mktemp("datasets"), cfg).parent


def _tiles(root, split):
    for png in sorted((root / "images" / split).glob("*.png")):
        m = TILE.match(png.stem)
        h, w = cv2.imread(str(png)).shape[:2]
        text = (root / "labels" / split / f"{png.stem}.txt").read_text().split()
        lab = np.array(text, dtype=np.float64).reshape(-1, 5)
        yield m["stem"], int(m["x"]), int(m["y"]), w, h, lab


def test_train_and_val_tiles_come_from_disjoint_source_images(trees):
    cfg, data_dir, root = trees
    stems = {split: {t[0] for t in _tiles(root, split)} for split in ("train", "val")}
    assert stems["val"] == set(cfg.val_sources)
    assert stems["train"] == set(sources(data_dir)) - set(cfg.val_sources)
    assert not stems["train"] & stems["val"]


def test_tiles_are_the_source_pixels_at_their_coordinates(trees):
    _, data_dir, root = trees
    src = sources(data_dir)
    for split in ("train", "val"):
        for stem, x0, y0, w, h, _ in _tiles(root, split):
            img = cv2.imread(str(src[stem][0]))
            assert w == min(320, img.shape[1] - x0) and h == min(320, img.shape[0] - y0)
            tile = cv2.imread(str(root / "images" / split / f"{stem}_x{x0}_y{y0}.png"))
            assert np.array_equal(tile, img[y0:y0 + h, x0:x0 + w]), (stem, x0, y0)


def test_every_box_is_in_exactly_the_tiles_holding_half_of_it(trees):
    """Each source box appears (clipped) in exactly the tiles that hold >= min_visible of its area, no label is
    invented, and every box no larger than the overlap appears whole in at least one tile."""
    cfg, data_dir, root = trees
    boxes = {stem: read_voc(xml) for stem, (_, xml) in sources(data_dir).items()}
    seen = {stem: np.zeros(len(b), int) for stem, b in boxes.items()}
    expected = {stem: np.zeros(len(b), int) for stem, b in boxes.items()}
    whole = {stem: np.zeros(len(b), bool) for stem, b in boxes.items()}
    for split in ("train", "val"):
        for stem, x0, y0, w, h, lab in _tiles(root, split):
            b = boxes[stem]
            ix = np.clip(np.minimum(b[:, 2], x0 + w) - np.maximum(b[:, 0], x0), 0, None)
            iy = np.clip(np.minimum(b[:, 3], y0 + h) - np.maximum(b[:, 1], y0), 0, None)
            frac = ix * iy / ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
            expected[stem] += frac >= cfg.min_visible
            whole[stem] |= frac == 1
            clipped = np.stack([np.clip(b[:, 0], x0, x0 + w), np.clip(b[:, 1], y0, y0 + h),
                                np.clip(b[:, 2], x0, x0 + w), np.clip(b[:, 3], y0, y0 + h)], 1)
            assert (lab[:, 0] == 0).all()
            for _, cx, cy, bw, bh in lab:
                got = np.array([x0 + (cx - bw / 2) * w, y0 + (cy - bh / 2) * h, x0 + (cx + bw / 2) * w,
                                y0 + (cy + bh / 2) * h])
                hit = np.flatnonzero(np.abs(clipped - got).max(1) < 0.01)
                assert len(hit) >= 1, f"label {got} in {stem}_x{x0}_y{y0} matches no source box"
                seen[stem][hit[0]] += 1
    for stem in boxes:
        assert np.array_equal(seen[stem], expected[stem]), stem
        b = boxes[stem]
        small = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) <= cfg.overlap
        assert whole[stem][small].all(), f"{stem}: a box smaller than the overlap is cut in every tile"
        assert (seen[stem] > 0).mean() > 0.99, stem


def test_data_trees_selects_the_tiled_dataset_under_the_project_datasets(tmp_path):
    try:
        deepforest_data_dir()
    except PruningError:
        pytest.skip("deepforest (the `data` extra) is not installed")
    from pruning.job.config import load_config
    from pruning.job.datasets import dataset

    settings = load_config(overrides={"data": "trees", "project": str(tmp_path / "runs")})
    path = dataset(settings)
    assert path.parent.parent == tmp_path / "datasets" and path.parent.name.startswith("trees-")
    assert "names:\n  0: tree\n" in path.read_text()

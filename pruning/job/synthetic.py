"""An offline synthetic dataset in ultralytics format: filled shapes with polygon masks on cluttered backgrounds.

Both detection and segmentation train on it (labels are polygons; ultralytics derives boxes from them), it is
fully determined by its seed and size, and it is written once: a second call with the same settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from fxgraph.outputs import atomic_dir

from ..errors import OutputError

CLASSES = ("circle", "triangle", "square", "star")


@dataclass(frozen=True)
class ShapesConfig:
    """What determines the dataset; its hash names the folder, so changed settings never reuse stale files."""

    n_train: int = 160
    n_val: int = 40
    imgsz: int = 128
    max_objects: int = 3
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "circle":
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif kind == "triangle":
        t = angle + np.array([0, 2, 4]) * math.pi / 3
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif kind == "square":
        t = angle + np.array([1, 3, 5, 7]) * math.pi / 4
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    else:  # star: ten points alternating outer and inner radius
        t = angle + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)
    return pts


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(0, 256, 3)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = base
    noise = rng.normal(0, 18, (size, size, 3))
    img = np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(6, 14)):  # clutter: thin random lines and small blobs
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        p1, p2 = tuple(int(v) for v in rng.integers(0, size, 2)), tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.6:
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 3)))
        else:
            cv2.ellipse(img, p1, (int(rng.integers(2, 6)), int(rng.integers(2, 6))), 0, 0, 360, colour, -1)
    return img


def _sample(rng: np.random.Generator, cfg: ShapesConfig) -> tuple[np.ndarray, list[str]]:
    size = cfg.imgsz
    img = _background(rng, size)
    lines: list[str] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(0.12, 0.24) * size
            cx, cy = rng.uniform(r, size - r, 2)
            if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        cls = int(rng.integers(len(CLASSES)))
        pts = _polygon(CLASSES[cls], cx, cy, r, rng.uniform(0, 2 * math.pi))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour)
        cv2.polylines(img, [np.round(pts).astype(np.int32)], True, (0, 0, 0), 1)
        norm = np.clip(pts / size, 0, 1).reshape(-1)
        lines.append(f"{cls} " + " ".join(f"{v:.5f}" for v in norm))
    return img, lines


def shapes_dataset_path(root: str | Path, cfg: ShapesConfig = ShapesConfig()) -> Path:
    """Where `make_shapes_dataset(root, cfg)` writes its data.yaml (it exists once the dataset is complete)."""
    return Path(root) / f"shapes-{cfg.key()}" / "data.yaml"


def make_shapes_dataset(root: str | Path, cfg: ShapesConfig = ShapesConfig()) -> Path:
    """Write (or reuse) the dataset under `root/shapes-<hash>/` and return the path of its `data.yaml`."""
    root = Path(root)
    data_yaml = shapes_dataset_path(root, cfg)
    target = data_yaml.parent
    if data_yaml.is_file():
        return data_yaml
    root.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target, error=OutputError, keep_existing=True) as tmp:  # never half a dataset
        rng = np.random.default_rng(cfg.seed)
        for split, count in (("train", cfg.n_train), ("val", cfg.n_val)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(count):
                img, lines = _sample(rng, cfg)
                cv2.imwrite(str(tmp / "images" / split / f"{i:05d}.png"), img)
                (tmp / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASSES))
        (tmp / "data.yaml").write_text(
            f"# synthetic shapes, {asdict(cfg)}\npath: {target.resolve()}\ntrain: images/train\nval: images/val\n"
            f"names:\n{names}\n"
        )
    return data_yaml

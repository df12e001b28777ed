"""An offline synthetic dataset in ultralytics format: filled shapes on cluttered backgrounds, labelled for every task.

The images are the same for every task (fully determined by the seed and size); the labels differ: polygons for
detect and segment (ultralytics derives boxes from them), each shape's minimum-area rotated rectangle for OBB, the
five tips of each star as keypoints for pose, and one crop per shape in class folders for classify.  A dataset is
written once, atomically, in a folder named by its task and settings: a second call reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from fxgraph.outputs import atomic_dir

from ..errors import OutputError, PruningError

CLASSES = ("circle", "triangle", "square", "star")
TASKS = ("detect", "segment", "obb", "pose", "classify")
POSE_CLASSES = ("star",)  # pose data labels stars only: every label line needs the five keypoints
KPT_SHAPE = (5, 3)  # a star's five tips, (x, y, visibility)
FLIP_IDX = (0, 4, 3, 2, 1)  # tips run from the topmost clockwise, so a mirror image reverses all but the first
CROP_MARGIN = 0.1  # of the shape's radius, around its axis-aligned box, in a classification crop


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


@dataclass(frozen=True)
class Shape:
    """One drawn shape, in pixels: its class index in CLASSES, outline (as filled) and the angle it was drawn at."""

    cls: int
    polygon: np.ndarray  # (n, 2) x, y
    angle: float

    @property
    def name(self) -> str:
        return CLASSES[self.cls]


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


def draw_sample(rng: np.random.Generator, cfg: ShapesConfig) -> tuple[np.ndarray, list[Shape]]:
    """One image and the record of the shapes drawn on it (the next draw of `rng`)."""
    size = cfg.imgsz
    img = _background(rng, size)
    shapes: list[Shape] = []
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
        angle = rng.uniform(0, 2 * math.pi)
        pts = _polygon(CLASSES[cls], cx, cy, r, angle)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour)
        cv2.polylines(img, [np.round(pts).astype(np.int32)], True, (0, 0, 0), 1)
        shapes.append(Shape(cls, pts, angle))
    return img, shapes


def samples(cfg: ShapesConfig) -> Iterator[tuple[str, int, np.ndarray, list[Shape]]]:
    """Every image of the dataset in order, as (split, index, image, shapes drawn): the record its labels come from."""
    rng = np.random.default_rng(cfg.seed)
    for split, count in (("train", cfg.n_train), ("val", cfg.n_val)):
        for i in range(count):
            yield (split, i, *draw_sample(rng, cfg))


def min_area_rect(polygon: np.ndarray) -> np.ndarray:
    """The four corners (4, 2) of the smallest rotated rectangle around `polygon`, in order around it."""
    return cv2.boxPoints(cv2.minAreaRect(polygon.astype(np.float32))).astype(np.float64)


def star_tips(polygon: np.ndarray) -> np.ndarray:
    """A star's five tips (5, 2): the topmost first (smallest y), then clockwise as seen on screen."""
    tips = polygon[::2]
    centre = polygon.mean(0)
    order = np.argsort(np.arctan2(tips[:, 1] - centre[1], tips[:, 0] - centre[0]))  # y down: increasing = clockwise
    tips = tips[order]
    return np.roll(tips, -int(np.argmin(tips[:, 1])), axis=0)


def keypoint_rows(tips: np.ndarray, size: int) -> np.ndarray:
    """(5, 3) normalised keypoints: visibility 2 for a tip inside the image, 0 (and x = y = 0) outside it."""
    inside = np.all((tips >= 0) & (tips <= size), axis=1)
    return np.concatenate([np.where(inside[:, None], tips / size, 0.0), np.where(inside, 2.0, 0.0)[:, None]], 1)


def task_classes(task: str) -> tuple[str, ...]:
    """The class names of the synthetic data of `task` (pose labels stars only)."""
    return POSE_CLASSES if task == "pose" else CLASSES


def _numbers(values: np.ndarray) -> str:
    return " ".join(f"{v:.5f}" for v in np.asarray(values).reshape(-1))


def label_lines(shapes: list[Shape], task: str, size: int) -> list[str]:
    """The ultralytics label lines of one image for `task` (detect, segment, obb or pose)."""
    if task in ("detect", "segment"):  # polygons: ultralytics derives the boxes
        return [f"{s.cls} {_numbers(np.clip(s.polygon / size, 0, 1))}" for s in shapes]
    if task == "obb":  # class x1 y1 ... x4 y4, the exact rectangle (a corner may lie just outside the image)
        return [f"{s.cls} {_numbers(min_area_rect(s.polygon) / size)}" for s in shapes]
    if task == "pose":  # class xc yc w h, then x y v per keypoint
        lines = []
        for s in shapes:
            if s.name not in POSE_CLASSES:
                continue  # drawn, unlabelled: a distractor the detector must learn to ignore
            lo, hi = np.clip(s.polygon.min(0), 0, size) / size, np.clip(s.polygon.max(0), 0, size) / size
            box = np.concatenate([(lo + hi) / 2, hi - lo])
            kpts = keypoint_rows(star_tips(s.polygon), size)
            lines.append(f"{POSE_CLASSES.index(s.name)} {_numbers(box)} {_numbers(kpts)}")
        return lines
    raise PruningError(f"no synthetic labels for task {task!r}; tasks: {', '.join(TASKS)}")


def crop_box(shape: Shape, size: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (pixels, x1 and y1 exclusive) of a shape's classification crop: its box and a margin."""
    radius = float(np.max(np.linalg.norm(shape.polygon - shape.polygon.mean(0), axis=1)))
    lo = np.floor(shape.polygon.min(0) - CROP_MARGIN * radius).clip(0, size).astype(int)
    hi = np.ceil(shape.polygon.max(0) + CROP_MARGIN * radius).clip(0, size).astype(int)
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _folder(task: str) -> str:
    if task not in TASKS:
        raise PruningError(f"no synthetic shapes dataset for task {task!r}; tasks: {', '.join(TASKS)}")
    return "shapes" if task in ("detect", "segment") else f"shapes-{task}"  # detect and segment share polygons


def shapes_dataset_path(root: str | Path, cfg: ShapesConfig = ShapesConfig(), task: str = "detect") -> Path:
    """What `make_shapes_dataset(root, cfg, task)` returns (it exists once the dataset is complete): the data.yaml,
    or for classify the folder holding train/<class>/ and val/<class>/ (ultralytics's `data=` for each task)."""
    folder = Path(root) / f"{_folder(task)}-{cfg.key()}"
    return folder if task == "classify" else folder / "data.yaml"


def make_shapes_dataset(root: str | Path, cfg: ShapesConfig = ShapesConfig(), task: str = "detect") -> Path:
    """Write (or reuse) the dataset of `task` under `root/shapes[-task]-<hash>/`; return its data.yaml (the folder
    for classify)."""
    root = Path(root)
    data = shapes_dataset_path(root, cfg, task)
    target = data if task == "classify" else data.parent
    if data.exists():
        return data
    root.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target, error=OutputError, keep_existing=True) as tmp:  # never half a dataset
        for split in ("train", "val"):
            for folder in ([tmp / split / name for name in CLASSES] if task == "classify" else
                           [tmp / "images" / split, tmp / "labels" / split]):
                folder.mkdir(parents=True)
        for split, i, img, shapes in samples(cfg):
            if task == "classify":
                for k, s in enumerate(shapes):
                    x0, y0, x1, y1 = crop_box(s, cfg.imgsz)
                    cv2.imwrite(str(tmp / split / s.name / f"{i:05d}_{k}.png"), img[y0:y1, x0:x1])
                continue
            cv2.imwrite(str(tmp / "images" / split / f"{i:05d}.png"), img)
            lines = label_lines(shapes, task, cfg.imgsz)
            (tmp / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
        if task != "classify":
            (tmp / "data.yaml").write_text(_data_yaml(cfg, task, target))
    return data


def _data_yaml(cfg: ShapesConfig, task: str, target: Path) -> str:
    names = task_classes(task)
    purpose = "detect and segment" if task in ("detect", "segment") else task
    text = (f"# synthetic shapes for {purpose}, {asdict(cfg)}\npath: {target.resolve()}\ntrain: images/train\n"
            f"val: images/val\nnames:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    if task == "pose":
        text += f"kpt_shape: {list(KPT_SHAPE)}\nflip_idx: {list(FLIP_IDX)}\n"
    return text

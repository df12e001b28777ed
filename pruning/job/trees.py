"""An offline real-image dataset: deepforest's aerial tree-crown images cut into overlapping tiles, one class `tree`.

The source images and their Pascal VOC boxes ship in the `deepforest` package (the `data` extra); they are located
without importing it (its import needs heavy optional dependencies) and never modified. Train and validation are split
by SOURCE image, so no validation tile shares a pixel with a training tile. A box goes into a tile when at least
`min_visible` of its area lies inside it (clipped to the tile); a box no larger than the overlap always fits whole in
some tile. Written once under a folder named by the settings' hash, like the synthetic shapes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from fxgraph.outputs import atomic_dir

from ..errors import OutputError, PruningError

CLASSES = ("tree",)
TREES = "trees"  # the `data=` value that selects this dataset


@dataclass(frozen=True)
class TreesConfig:
    """What determines the tiles; its hash names the folder."""

    tile: int = 320
    overlap: int = 64
    min_visible: float = 0.5
    val_sources: tuple[str, ...] = ("OSBS_029", "SOAP_061")

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def deepforest_data_dir() -> Path:
    """The `deepforest/data` folder of the installed package, found without importing deepforest."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise PruningError("data=trees needs the deepforest package: pip install 'detdshap[data]' "
                           "(or pip install --no-deps deepforest==2.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sources(data_dir: Path) -> dict[str, tuple[Path, Path]]:
    """Stem -> (png, VOC xml) for every image of `data_dir` that has both."""
    pngs = sorted(data_dir.glob("*.png"))
    return {p.stem: (p, p.with_suffix(".xml")) for p in pngs if p.with_suffix(".xml").is_file()}


def read_voc(xml: Path) -> np.ndarray:
    """The (n, 4) float array of xmin, ymin, xmax, ymax boxes of a Pascal VOC file (every label is a tree)."""
    boxes = [[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
             for o in ET.parse(xml).getroot().iter("object")]
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def tile_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every `tile - overlap` pixels, the last one flush with the far edge."""
    if not 0 <= overlap < tile:
        raise PruningError(f"trees: overlap={overlap} must be in [0, tile={tile})")
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def boxes_in_tile(boxes: np.ndarray, x0: int, y0: int, w: int, h: int,
                  min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices, clipped boxes in tile coordinates) of the boxes with at least `min_visible` of their area inside."""
    clipped = np.stack([np.clip(boxes[:, 0] - x0, 0, w), np.clip(boxes[:, 1] - y0, 0, h),
                        np.clip(boxes[:, 2] - x0, 0, w), np.clip(boxes[:, 3] - y0, 0, h)], 1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = np.flatnonzero((area > 0) & (inside >= min_visible * area))
    return keep, clipped[keep]


def trees_dataset_path(root: str | Path, cfg: TreesConfig = TreesConfig()) -> Path:
    return Path(root) / f"trees-{cfg.key()}" / "data.yaml"


def make_trees_dataset(root: str | Path, cfg: TreesConfig = TreesConfig(), data_dir: Path | None = None) -> Path:
    """Write (or reuse) the tiled dataset under `root/trees-<hash>/` and return its `data.yaml`.

    Tile files are named `<source>_x<x0>_y<y0>.png` so each tile can be traced back to its source pixels.
    """
    data_yaml = trees_dataset_path(root, cfg)
    if data_yaml.is_file():
        return data_yaml
    src = sources(data_dir or deepforest_data_dir())
    missing = [s for s in cfg.val_sources if s not in src]
    if missing or len(src) <= len(cfg.val_sources):
        raise PruningError(f"trees: validation sources {missing or cfg.val_sources} must be some (not all) of the "
                           f"labelled images found: {sorted(src)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = data_yaml.parent
    with atomic_dir(target, error=OutputError, keep_existing=True) as tmp:  # never half a dataset
        for stem, (png, xml) in src.items():
            split = "val" if stem in cfg.val_sources else "train"
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            img = cv2.imread(str(png), cv2.IMREAD_COLOR)
            boxes = read_voc(xml)
            H, W = img.shape[:2]
            for y0 in tile_origins(H, cfg.tile, cfg.overlap):
                for x0 in tile_origins(W, cfg.tile, cfg.overlap):
                    w, h = min(cfg.tile, W - x0), min(cfg.tile, H - y0)
                    _, tb = boxes_in_tile(boxes, x0, y0, w, h, cfg.min_visible)
                    name = f"{stem}_x{x0}_y{y0}"
                    cv2.imwrite(str(tmp / "images" / split / f"{name}.png"), img[y0:y0 + h, x0:x0 + w])
                    lines = [f"0 {(a + c) / 2 / w:.6f} {(b + d) / 2 / h:.6f} {(c - a) / w:.6f} {(d - b) / h:.6f}"
                             for a, b, c, d in tb]
                    (tmp / "labels" / split / f"{name}.txt").write_text("".join(f"{ln}\n" for ln in lines))
        (tmp / "data.yaml").write_text(
            f"# deepforest aerial tree crowns tiled, {asdict(cfg)}\npath: {target.resolve()}\ntrain: images/train\n"
            f"val: images/val\nnames:\n  0: tree\n")
    return data_yaml

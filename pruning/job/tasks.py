"""Which ultralytics task a model is, and which tasks a dataset's labels serve: the job makes the synthetic data of
the model's task, and refuses data of another task before it writes anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fxgraph

from .config import ConfigError, Settings
from .trees import TREES

BOX_TASKS = frozenset({"detect", "segment", "obb"})
LABEL_SAMPLE = 200  # label files read to tell boxes, polygons and rotated rectangles apart


class DataTaskError(ConfigError):
    """The data's labels are for another task than the model's (a pose model on box labels, detect on class folders)."""


def model_source(settings: Settings) -> tuple[str, str]:
    """The setting the job's model comes from and its value: `pretrained` when given, else the `model` yaml."""
    if settings.pretrained is not None:
        return "pretrained", str(settings.pretrained)
    return "model", str(settings.model)


def model_task(source: str | Path) -> str:
    """The ultralytics task of weights or a model yaml ('detect', 'segment', 'pose', 'obb', 'classify'), read from
    its head as ultralytics's `guess_model_task` does, never from the file name."""
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    if Path(source).suffix in (".yaml", ".yml"):
        return guess_model_task(yaml_model_load(source))
    return guess_model_task(fxgraph.load_ultralytics(source))


def data_tasks(data: str | Path | None, info: dict[str, Any] | None = None) -> frozenset[str] | None:
    """The tasks whose trainers can use `data`: a folder of class folders serves classify; a yaml with `kpt_shape`
    pose (and detect, which drops the keypoints); otherwise the label rows decide: a box row (5 numbers) serves
    detect only, polygons detect and segment, and rotated rectangles (4 corners) OBB too.  None for the synthetic
    shapes, written for whichever task the model has.  `info` is ultralytics's reading of a yaml."""
    if data is None:
        return None
    if data == TREES:
        return frozenset({"detect"})  # deepforest's boxes
    if Path(data).is_dir():
        return frozenset({"classify"})
    if info is None:
        from ultralytics.data.utils import check_det_dataset

        info = check_det_dataset(str(data), autodownload=False)
    if info.get("kpt_shape"):
        return frozenset({"pose", "detect"})
    columns = label_columns(info["train"])
    if not columns:
        return BOX_TASKS  # no labelled object: any box task can train on it
    if 5 in columns:
        return frozenset({"detect"})
    return BOX_TASKS if columns == {9} else frozenset({"detect", "segment"})


def label_columns(split: str | list[str]) -> set[int]:
    """The numbers of columns of the label rows of (up to LABEL_SAMPLE of) a split's images."""
    from ultralytics.data.utils import IMG_FORMATS, img2label_paths

    images: list[str] = []
    for entry in split if isinstance(split, list) else [split]:
        p = Path(entry)
        if p.is_dir():
            images += sorted(str(f) for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS)
        elif p.suffix == ".txt" and p.is_file():
            images += [line.strip() for line in p.read_text(errors="replace").splitlines() if line.strip()]
        else:
            images.append(str(p))
    columns: set[int] = set()
    for label in img2label_paths(images[:LABEL_SAMPLE]):
        if Path(label).is_file():
            rows = Path(label).read_text(errors="replace").splitlines()
            columns |= {len(row.split()) for row in rows if row.strip()}
    return columns


def class_folders(data: str | Path) -> list[str]:
    """The class names of a classification folder (ultralytics's layout: train/<class>/ and val/<class>/ of images,
    sorted by name); ConfigError when a split is missing or holds no image."""
    from ultralytics.data.utils import IMG_FORMATS

    root = Path(data)
    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) if (root / "train").is_dir() else []
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not any(f.suffix[1:].lower() in IMG_FORMATS for f in folder.rglob("*")):
            raise ConfigError(f"data={data}: a classification folder needs images in {split}/<class>/ "
                              f"(ultralytics's layout); {folder} has none")
    return names


def describe_tasks(tasks: frozenset[str]) -> str:
    order = ("classify", "pose", "obb", "segment", "detect")
    return "/".join(t for t in order if t in tasks)

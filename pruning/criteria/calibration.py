"""Calibration data for the data-driven criteria: ultralytics batches (letterboxed images, labels, masks).

One loader serves all of them: DetDSHAP takes the images and ground-truth boxes, Taylor the same batches through
ultralytics's own loss, HSIC-Lasso the images.  Batches are deterministic (no shuffling, no augmentation) and
can be sharded across processes for distributed scoring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import PruningError
from .distributed import shard


@dataclass
class Calibration:
    """The first `n_images` images of a dataset split as ultralytics batches; `shard(rank, world)` splits them."""

    batches: list[dict[str, Any]]
    task: str
    imgsz: int
    args: Any  # the ultralytics hyper-parameters namespace, which model.loss() needs

    @property
    def n_images(self) -> int:
        return sum(b["img"].shape[0] for b in self.batches)

    def shard(self, rank: int, world: int) -> "Calibration":
        """This rank's share of the batches (distributed.shard), so that every image is scored exactly once."""
        return Calibration(shard(self.batches, rank, world), self.task, self.imgsz, self.args)

    def images(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(image (3, H, W) RGB float in [0, 1], boxes in input pixels, classes (n,)) per image: boxes (n, 4) xyxy,
        or (n, 5) xywhr (radians) for OBB labels, the rotated boxes relprop matches on an OBB model."""
        for b in self.batches:
            imgs = b["img"].float() / 255
            if "bboxes" not in b:  # a classification batch: the image's class, no box
                for i in range(imgs.shape[0]):
                    yield imgs[i], torch.zeros(0, 4), b["cls"][i : i + 1].view(-1).long()
                continue
            for i in range(imgs.shape[0]):
                sel = b["batch_idx"] == i
                h, w = imgs.shape[-2:]
                boxes = b["bboxes"][sel]
                xywh = boxes[:, :4] * torch.tensor([w, h, w, h], dtype=torch.float32)
                if boxes.shape[1] == 5:  # OBB: normalised xywh and the angle
                    yield imgs[i], torch.cat([xywh, boxes[:, 4:]], 1), b["cls"][sel].view(-1).long()
                    continue
                xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
                yield imgs[i], xyxy, b["cls"][sel].view(-1).long()


def load_calibration(data: str | Path, task: str, imgsz: int, n_images: int, *, split: str = "train",
                     batch: int = 8, stride: int = 32) -> Calibration:
    """Read `n_images` images with their labels from split `split` of the ultralytics dataset `data`."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    if Path(data).is_dir():
        return _classification_calibration(Path(data), task, imgsz, n_images, split=split, batch=batch)
    if not Path(data).is_file():
        raise PruningError(f"calibration data {data}: no such dataset yaml (or classification folder)")
    try:
        info = check_det_dataset(str(data))
    except Exception as exc:
        raise PruningError(f"calibration data {data}: ultralytics cannot read it ({exc})") from exc
    if split not in info:
        raise PruningError(f"calibration data {data} has no '{split}' split")
    args = get_cfg(DEFAULT_CFG, {"imgsz": imgsz, "task": task, "batch": batch, "workers": 0, "rect": False})
    dataset = build_yolo_dataset(args, info[split], batch, info, mode="val", stride=int(stride))
    loader = build_dataloader(dataset, batch, 0, shuffle=False)
    batches: list[dict[str, Any]] = []
    for b in loader:
        batches.append(b)
        if len(batches) >= math.ceil(n_images / batch):
            break
    if not batches:
        raise PruningError(f"calibration data {data}: the '{split}' split has no images")
    return Calibration(batches, task, imgsz, args)


def _classification_calibration(folder: Path, task: str, imgsz: int, n_images: int, *, split: str,
                                batch: int) -> Calibration:
    """`n_images` images of split `split` of a classification folder (ultralytics's layout: split/class/image),
    resized and centre-cropped as ultralytics validates them; images scaled to 0-255 like detection batches."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader
    from ultralytics.data.dataset import ClassificationDataset
    from ultralytics.utils import DEFAULT_CFG

    root = folder / split
    if task != "classify":
        raise PruningError(f"calibration data {folder} is a classification folder; a {task} model needs a dataset "
                           "yaml of its task")
    if not root.is_dir():
        raise PruningError(f"calibration data {folder} has no '{split}' folder (split/class/image)")
    args = get_cfg(DEFAULT_CFG, {"imgsz": imgsz, "task": task, "batch": batch, "workers": 0, "rect": False})
    try:
        dataset = ClassificationDataset(root=str(root), args=args, augment=False, prefix=split)
    except Exception as exc:
        raise PruningError(f"calibration data {folder}: ultralytics cannot read it ({exc})") from exc
    loader = build_dataloader(dataset, batch, 0, shuffle=False)
    batches: list[dict[str, Any]] = []
    for b in loader:
        batches.append({**b, "img": b["img"] * 255})  # ToTensor gives [0, 1]; criteria divide by 255
        if len(batches) >= math.ceil(n_images / batch):
            break
    if not batches:
        raise PruningError(f"calibration data {folder}: the '{split}' split has no images")
    return Calibration(batches, task, imgsz, args)

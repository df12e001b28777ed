"""Example figures of the tasks of issue 27 on ultralytics's bus.jpg: one pose keypoint, one rotated box and one
instance mask, explained by relprop on random-weight models (no pose, OBB or segment weights ship in the packages we
use; BatchNorm recalibrated, benchmarks/random_models.py).  The relevance is exact for these models; what it shows is
what a random network looks at, not a trained one.

    python benchmarks/explain_tasks.py [--imgsz 320] [--out benchmarks/results/explain_tasks]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import relprop  # noqa: E402
from benchmarks.random_models import random_model  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402

CASES = (  # name, yaml, explain options
    ("pose_keypoint", "yolo11n-pose.yaml", dict(target="keypoints", keypoint=0)),
    ("rotated_box", "yolo11n-obb.yaml", dict(target="box")),
    ("instance_mask", "yolo11n-seg.yaml", dict(target="mask")),
)


def best_box(ex: relprop.Explainer, image: np.ndarray) -> np.ndarray:
    """The most confident raw candidate's box in original pixels (xyxy; xywhr for OBB) that lies in the image."""
    g = ex.graph
    lb = Letterbox.fit(image.shape[:2], g.imgsz)
    with torch.no_grad():
        pred = g.module(to_input(image, lb, g.dtype, g.device))[0][0].double()
    for a in pred[4:4 + g.nc].amax(0).argsort(descending=True).tolist():
        x, y, w, h = pred[:4, a].tolist()
        if g.facts.box_format == "xywhr":
            box = np.array([(x - lb.left) / lb.ratio, (y - lb.top) / lb.ratio, w / lb.ratio, h / lb.ratio,
                            float(pred[-1, a])])
            if 0 < box[0] < image.shape[1] and 0 < box[1] < image.shape[0] and w > 8 and h > 8:
                return box
            continue
        box = lb.box_to_original(np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2]), clip=False)
        if box[0] >= 0 and box[1] >= 0 and box[2] <= image.shape[1] and box[3] <= image.shape[0] and w > 16 and h > 16:
            return box
    raise SystemExit("no candidate box inside the image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explain_tasks"))
    args = parser.parse_args()
    import ultralytics

    image_path = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    image = read_image(image_path)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for name, yaml, options in CASES:
        ex = relprop.Explainer(random_model(yaml), args.imgsz, dtype=torch.float64)
        e = ex.explain_box(image, best_box(ex, image), iou=0.5, **options)
        e.save_png(args.out / f"{name}.png")
        records.append({"figure": f"{name}.png", "model": f"{yaml} (random weights, BN recalibrated)",
                        "options": options, **e.to_dict(), "relative_delta": e.relative_delta})
        print(f"{name}: {yaml} {options} score={e.score:.4f} ref={e.reference_score:.4f} delta={e.delta:.2e}")
    (args.out / "explain_tasks.json").write_text(json.dumps(
        {"command": f"python benchmarks/explain_tasks.py --imgsz {args.imgsz} --out {args.out}", "image": "bus.jpg",
         "imgsz": args.imgsz, "dtype": "float64", "explanations": records}, indent=2))


if __name__ == "__main__":
    main()

"""README figure "relprop and ultralytics's heatmaps": for the first two boxes of an image, side by side,
ultralytics's predict(visualize=True) output, our per-box LayerCAM (relprop.layercam) and relprop.

    python benchmarks/layercam_figure.py [--imgsz 640] [--out benchmarks/results/layercam_vs_relprop.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faith_methods import box_score  # noqa: E402  the benchmark's target: the box's summed class probability

import fxgraph  # noqa: E402
import relprop  # noqa: E402
from relprop.cli import default_image, ultralytics_heatmap  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402
from relprop.layercam import box_layercam  # noqa: E402
from relprop.options import ExplainOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_figure(image: Path, imgsz: int, out: Path, boxes: int = 2) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    exps = list(relprop.explain(None, image, None, ExplainOptions(imgsz=imgsz, max_det=boxes)))[:boxes]
    model = fxgraph.load_ultralytics(None).float().eval()
    array = read_image(image)
    x = to_input(array, Letterbox.fit(array.shape[:2], (imgsz, imgsz)), torch.float32, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        jpg = next(ultralytics_heatmap(None, image, imgsz, Path(tmp)).glob("*_cam*.jpg"))
        theirs = cv2.imread(str(jpg))[..., ::-1]
    gray = x[0].mean(0).numpy()
    fig, axes = plt.subplots(len(exps), 3, figsize=(9, 3.2 * len(exps)), squeeze=False)
    for i, e in enumerate(exps):
        lc = box_layercam(model, x, box_score(e.cls, e.candidates))[0].numpy()
        rel = cv2.GaussianBlur(e.input_relevance.sum(0).double().numpy(), (0, 0), 2.0)
        lim = np.percentile(np.abs(rel), 99.5) or 1.0
        axes[i, 0].imshow(theirs)
        axes[i, 0].set_title("ultralytics visualize=True\n(one map per image)", fontsize=8)
        axes[i, 1].imshow(gray, cmap="gray")
        axes[i, 1].imshow(lc, cmap="jet", vmin=0, vmax=1, alpha=0.5)
        axes[i, 1].set_title(f"LayerCAM of box {i} ({e.name})", fontsize=8)
        axes[i, 2].imshow(gray, cmap="gray")
        axes[i, 2].imshow(rel, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.75)
        axes[i, 2].set_title(f"relprop box {i}: red +, blue −\nΣ = f(x) − f(x0) = {e.score - e.reference_score:.3f}",
                             fontsize=8)
        b = e.box_input
        for ax in axes[i, 1:]:
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1))
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, default=default_image())
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "layercam_vs_relprop.png")
    args = ap.parse_args(argv)
    print(make_figure(args.image, args.imgsz, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`Explanation`: the relevance of one box, and its figure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class Explanation:
    """Why the detector predicted one box.

    heatmap          (H, W) relevance in original-image pixels (input relevance summed over RGB, padding cropped,
                     resized back with the sum kept; a classifier's: 0 where its centre crop cut the image);
                     positive = evidence for the target
    input_relevance  (3, h, w) relevance at the network input (letterboxed, padding included; a classifier's input
                     is ultralytics's centre crop); sums to score − reference_score up to `delta`
    channels         conv module path → relevance per output filter (summed over space): the pruning criterion's input
    score            f(x): the explained scalar at the image (see `relprop.target` for exactly what is summed)
    reference_score  f(x0): the same at the reference (the mean over the references for K of them)
    delta            Σ input_relevance − (score − reference_score): the completeness error, ≈ 0
    box              (x1, y1, x2, y2) in original pixels (OBB: x, y, w, h, r; a classifier: empty); box_input the same
                     in network-input pixels
    cls, name        explained class and its name; target "class" | "box" | "all" | "keypoints" | "mask"
    candidates, ious the matched raw candidates (anchor indices) and their IoU with the box
    conf             the detection's confidence when the box came from NMS, else the best matched candidate's score
    index            the box's position among those explained in the same call (0, 1, ...), shown as "#index"
    """

    heatmap: np.ndarray
    input_relevance: torch.Tensor
    channels: dict[str, np.ndarray]
    score: float
    reference_score: float
    delta: float
    box: np.ndarray
    box_input: np.ndarray
    cls: int
    name: str
    target: str
    candidates: np.ndarray
    ious: np.ndarray
    conf: float
    baseline: str = "black"
    index: int = 0
    image: np.ndarray | None = field(default=None, repr=False)  # original BGR (for the figure)
    keypoint: int | None = None                 # the explained keypoint (pose, target "keypoints"), None: all
    keypoints: np.ndarray | None = field(default=None, repr=False)  # best candidate's (nk, 2|3), original pixels
    mask: np.ndarray | None = field(default=None, repr=False)       # the instance's (H, W) mask (target "mask")

    @property
    def relative_delta(self) -> float:
        """|delta| / max(1, |score − reference_score|)."""
        return abs(self.delta) / max(1.0, abs(self.score - self.reference_score))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays but the box)."""
        return {
            "index": self.index,
            "box": [round(float(v), 2) for v in self.box],
            "class": self.cls,
            "name": self.name,
            "target": self.target,
            "conf": round(float(self.conf), 5),
            "score": float(self.score),
            "reference_score": float(self.reference_score),
            "delta": float(self.delta),
            "relevance_sum": float(self.input_relevance.sum()),
            "candidates": [int(c) for c in self.candidates],
            "ious": [round(float(v), 4) for v in self.ious],
            "baseline": self.baseline,
            **({"keypoint": self.keypoint} if self.keypoint is not None else {}),
        }

    def _repr_png_(self) -> bytes:
        """A notebook shows an Explanation as its figure: the `save_png` drawing, as PNG bytes."""
        from .display import png_bytes

        return png_bytes(self)

    def save_png(self, path: str | Path, *, alpha: float = 0.7, dpi: int = 110, percentile: float = 99.5) -> Path:
        """Draw the heatmap over the (greyed) image with the box: diverging colour map, positive red, negative blue,
        symmetric around 0 and saturating at the `percentile` of |heatmap| (pixel relevance is heavy-tailed), with a
        colour bar.  Uses matplotlib's Agg backend and its bundled font only."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import pyplot as plt
        from matplotlib.colors import TwoSlopeNorm

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = self.heatmap.shape
        fig, ax = plt.subplots(figsize=(max(4.0, 6.0 * w / max(h, w)) + 1.2, max(4.0, 6.0 * h / max(h, w))), dpi=dpi)
        if self.image is not None:
            grey = self.image[..., ::-1].astype(np.float64).mean(-1) / 255.0
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        bound = float(np.percentile(np.abs(self.heatmap), percentile)) or float(np.abs(self.heatmap).max()) or 1.0
        im = ax.imshow(self.heatmap, cmap="bwr", norm=TwoSlopeNorm(0.0, -bound, bound), alpha=alpha,
                       interpolation="nearest")
        self._draw_target(ax, w, h)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        what = self.target if self.keypoint is None else f"keypoint {self.keypoint}"
        ax.set_title(f"#{self.index} {self.name} conf={self.conf:.2f} ({what})  f(x)={self.score:.3f}  "
                     f"f(x0)={self.reference_score:.3f}  Δ={self.delta:.1e}", fontsize=8)
        ax.set_axis_off()
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.set_label("relevance per pixel (red: for, blue: against)", fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path

    def _draw_target(self, ax: Any, w: int, h: int) -> None:
        """The explained box (rotated for OBB), the instance mask's outline, the keypoints (the explained one ringed)."""
        from matplotlib.patches import Polygon, Rectangle

        if self.mask is not None and self.mask.any():
            ax.contour(self.mask.astype(float), levels=[0.5], colors="yellow", linewidths=1.5)
        if self.box.size == 5:
            from .target import rotated_corners

            ax.add_patch(Polygon(rotated_corners(self.box), closed=True, fill=False, edgecolor="lime", linewidth=2))
        elif self.box.size == 4:  # a box past the image edge is drawn clipped to it, its edge on the border in full
            x1, y1, x2, y2 = np.clip(self.box, -0.5, [w - 0.5, h - 0.5] * 2)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="lime", linewidth=2,
                                   clip_on=False))
        if self.keypoints is not None:
            ax.scatter(self.keypoints[:, 0], self.keypoints[:, 1], s=10, c="cyan", edgecolors="black", linewidths=0.5)
            if self.keypoint is not None:
                x, y = self.keypoints[self.keypoint, :2]
                ax.scatter([x], [y], s=120, facecolors="none", edgecolors="yellow", linewidths=2)

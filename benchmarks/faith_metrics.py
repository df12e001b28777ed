"""Faithfulness measures for one relevance map of one box (used by benchmarks/faithfulness.py).

All maps are 2-D (h, w) at the letterboxed network input; `valid` marks the image content (the letterbox padding is
never ranked, moved or counted).  The explained score is a function `score(batch) -> (B,)` of input batches.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

STEPS = 20  # 5 % steps: fractions 0, 0.05, ..., 1


def box_mask(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: pixels whose centre lies inside the xyxy box (network-input pixels)."""
    h, w = shape
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    inx = (xs >= box[0]) & (xs <= box[2])
    iny = (ys >= box[1]) & (ys <= box[3])
    return iny[:, None] & inx[None, :]


def energy_pointing_game(relevance: np.ndarray, box: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fraction of the positive relevance that lies inside the box (Wang et al. 2020, 'energy-based pointing game').
    NaN when the map has no positive relevance."""
    pos = np.clip(np.asarray(relevance, dtype=np.float64), 0, None)
    if valid is not None:
        pos = pos * valid
    total = pos.sum()
    if total <= 0:
        return float("nan")
    return float(pos[box_mask(box, pos.shape)].sum() / total)


def ranking(relevance: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Flat indices of the valid pixels, most relevant first (stable: ties keep raster order)."""
    flat = np.asarray(relevance, dtype=np.float64).reshape(-1)
    idx = np.flatnonzero(np.ones_like(flat, dtype=bool) if valid is None else np.asarray(valid).reshape(-1))
    order = np.argsort(-flat[idx], kind="stable")
    return idx[order]


def perturbation_batch(x: torch.Tensor, x0: torch.Tensor, order: np.ndarray, mode: str,
                       steps: int = STEPS) -> torch.Tensor:
    """(steps+1, C, h, w) inputs: for fraction k/steps of the ranked pixels, `deletion` replaces them in x by x0,
    `insertion` reveals them from x on top of x0 (all channels of a pixel together)."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(mode)
    c, h, w = x.shape[-3:]
    xf, x0f = x.reshape(c, h * w), x0.reshape(c, h * w)
    out = []
    n = len(order)
    for k in range(steps + 1):
        chosen = torch.as_tensor(order[: int(round(n * k / steps))], dtype=torch.long)
        if mode == "deletion":
            img = xf.clone()
            img[:, chosen] = x0f[:, chosen]
        else:
            img = x0f.clone()
            img[:, chosen] = xf[:, chosen]
        out.append(img.reshape(c, h, w))
    return torch.stack(out)


def auc(values: np.ndarray) -> float:
    """Area under a curve sampled at equally spaced fractions of [0, 1] (trapezoid rule)."""
    v = np.asarray(values, dtype=np.float64)
    return float(((v[1:] + v[:-1]) / 2).sum() / (len(v) - 1))


def perturbation_curves(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, x0: torch.Tensor,
                        relevance: np.ndarray, valid: np.ndarray | None = None, steps: int = STEPS,
                        batch: int = 21) -> dict[str, object]:
    """Deletion and insertion curves of the score, normalised by the score of the unperturbed input, and their AUCs.

    Lower deletion AUC and higher insertion AUC are better."""
    order = ranking(relevance, valid)
    with torch.no_grad():
        s = float(score(x.unsqueeze(0))[0])
    result: dict[str, object] = {"score": s}
    for mode in ("deletion", "insertion"):
        imgs = perturbation_batch(x, x0, order, mode, steps)
        vals = []
        with torch.no_grad():
            for start in range(0, len(imgs), batch):
                vals.append(score(imgs[start:start + batch]).double())
        curve = (torch.cat(vals) / s).numpy()
        result[mode] = curve.tolist()
        result[f"{mode}_auc"] = auc(curve)
    return result


def completeness_error(total: float, score: float, reference_score: float) -> float:
    """|Σ relevance − (f(x) − f(x0))| / |f(x) − f(x0)|."""
    diff = score - reference_score
    return float(abs(total - diff) / max(abs(diff), 1e-12))


def image_inputs(array: np.ndarray, imgsz: tuple[int, int], dtype: torch.dtype, device: torch.device) -> tuple:
    """One image letterboxed to `imgsz` as the metrics see it: (lb, x, its black and blur references, and the mask of
    the pixels inside the letterbox, where deletion and insertion move pixels)."""
    from relprop.image import Letterbox, reference_inputs, to_input

    lb = Letterbox.fit(array.shape[:2], imgsz)
    x = to_input(array, lb, dtype, device)[0]
    x0 = reference_inputs("black", array, lb, dtype, device)[0]
    x_blur = reference_inputs("blur", array, lb, dtype, device)[0]
    valid = np.zeros(imgsz, dtype=bool)
    valid[lb.top:lb.top + lb.new_unpad[1], lb.left:lb.left + lb.new_unpad[0]] = True
    return lb, x, x0, x_blur, valid

"""The explanation methods compared in benchmarks/faithfulness.py, all explaining the same scalar per box:

    f(x) = Σ_{a ∈ matched candidates} pred[4 + cls, a]          (relprop's target="class")

Each method returns a (h, w) map at the letterboxed network input (signed where the method is signed).  The peers
(captum, pytorch-grad-cam, shap) are imported here only, never by the packages.
"""

from __future__ import annotations

import time
import traceback
from typing import Callable

import numpy as np
import torch
from torch import nn

from relprop.target import box_iou, xywh_to_xyxy

NECK_LAYERS = (15, 18, 21)  # YOLOv8's C2f outputs at P3, P4, P5 that feed the Detect head


def box_score(cls: int, candidates: np.ndarray) -> Callable[[torch.Tensor], torch.Tensor]:
    """pred (B, 4+nc, A) → (B,): Σ of the class-`cls` probability over the matched candidates."""
    idx = torch.as_tensor(np.asarray(candidates), dtype=torch.long)

    def score(pred: torch.Tensor) -> torch.Tensor:
        return pred[:, 4 + cls, idx.to(pred.device)].sum(-1)

    return score


def graph_score(module: nn.Module, score: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, 3, h, w) → (B,) through the traced graph (whose forward returns (pred,))."""
    return lambda x: score(module(x)[0])


# -- gradient methods on the same fx graph ----------------------------------------------------------------------------

def gradient_x_input(f: Callable, x: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, float]:
    """∂f/∂x · (x − x0) (x0 the black reference: equal to gradient × input on the image, 0 on the letterbox padding).
    Returns the (3, h, w) attribution and its sum."""
    xr = x.detach().clone().unsqueeze(0).requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr).sum(), xr)
    attr = (g[0] * (x - x0)).detach()
    return attr, float(attr.sum())


def integrated_gradients(f: Callable, x: torch.Tensor, x0: torch.Tensor, steps: int = 16,
                         batch: int = 4) -> tuple[torch.Tensor, float]:
    """Integrated Gradients (Sundararajan et al. 2017) from x0 to x, midpoint Riemann sum with `steps` points."""
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    total = torch.zeros_like(x)
    for start in range(0, steps, batch):
        a = alphas[start:start + batch].view(-1, 1, 1, 1)
        xs = (x0 + a * (x - x0)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xs).sum(), xs)
        total += g.sum(0)
    attr = (total / steps * (x - x0)).detach()
    return attr, float(attr.sum())


# -- D-RISE ----------------------------------------------------------------------------------------------------------

def rise_masks(n: int, shape: tuple[int, int], grid: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """RISE masks (Petsiuk et al. 2018): a grid×grid Bernoulli(p) grid, bilinearly upsampled to (grid+1)·cell and
    randomly shifted by up to one cell, cropped to `shape`.  → (n, 1, h, w) in [0, 1]."""
    h, w = shape
    ch, cw = int(np.ceil(h / grid)), int(np.ceil(w / grid))
    cells = (torch.rand(n, 1, grid, grid, generator=gen) < p).float()
    up = nn.functional.interpolate(cells, size=((grid + 1) * ch, (grid + 1) * cw), mode="bilinear",
                                   align_corners=False)
    dy = torch.randint(0, ch, (n,), generator=gen)
    dx = torch.randint(0, cw, (n,), generator=gen)
    return torch.stack([up[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def drise(module: nn.Module, x: torch.Tensor, x0: torch.Tensor, targets: list[tuple[np.ndarray, int]], nc: int,
          n: int = 1000, grid: int = 16, p: float = 0.5, batch: int = 8, seed: int = 0) -> dict:
    """D-RISE (Petsiuk et al. 2021) for several target boxes of one image, sharing the N masked forward passes.

    Masked input: x0 + M·(x − x0) (x0 the black reference: image content darkened, letterbox padding kept).  Weight
    of mask i for target t: max over all raw candidates a of IoU(box_t, box_a) · p_a[cls_t] — D-RISE's similarity
    (localisation × classification; YOLOv8 has no objectness).  Saliency_t = Σ_i w_ti M_i / N.
    Returns maps (T, h, w), the time of the masked forwards, and the time of the weighting (all targets)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = x.shape[-2:]
    boxes = torch.as_tensor(np.stack([t[0] for t in targets]), dtype=torch.float64)
    classes = [t[1] for t in targets]
    sal = torch.zeros(len(targets), h, w, dtype=torch.float64)
    t_fwd = t_weight = t_masks = 0.0
    for start in range(0, n, batch):
        k = min(batch, n - start)
        t0 = time.perf_counter()
        m = rise_masks(k, (h, w), grid, p, gen)
        t1 = time.perf_counter()
        with torch.no_grad():
            pred = module(x0 + m * (x - x0))[0].double()  # (k, 4+nc, A)
        t2 = time.perf_counter()
        for j in range(k):
            xyxy = xywh_to_xyxy(pred[j, :4].T)
            for ti, (box, c) in enumerate(zip(boxes, classes)):
                wgt = (box_iou(box, xyxy) * pred[j, 4 + c]).max()
                sal[ti] += wgt * m[j, 0].double()
        t3 = time.perf_counter()
        t_masks += t1 - t0
        t_fwd += t2 - t1
        t_weight += t3 - t2
    return {"maps": (sal / n).numpy(), "t_forward": t_fwd + t_masks, "t_weight": t_weight}


# -- pytorch-grad-cam on the ultralytics model -----------------------------------------------------------------------

class PredOnly(nn.Module):
    """An ultralytics DetectionModel whose forward returns only pred (B, 4+nc, A), as the fx graph does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y


class BoxScoreTarget:
    """pytorch-grad-cam target: the explained box score of one example's output (4+nc, A)."""

    def __init__(self, cls: int, candidates: np.ndarray):
        self.score = box_score(cls, candidates)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.score(output.unsqueeze(0))[0]


def cam_map(kind: str, wrapper: PredOnly, x: torch.Tensor, cls: int, candidates: np.ndarray) -> np.ndarray:
    """Grad-CAM or EigenCAM on the neck layers (mean of the per-layer CAMs, as pytorch-grad-cam aggregates)."""
    from pytorch_grad_cam import EigenCAM, GradCAM

    layers = [wrapper.model.model[i] for i in NECK_LAYERS]
    cls_ = {"gradcam": GradCAM, "eigencam": EigenCAM}[kind]
    with cls_(model=wrapper, target_layers=layers) as cam:
        out = cam(input_tensor=x.unsqueeze(0), targets=[BoxScoreTarget(cls, candidates)])
    return np.asarray(out[0], dtype=np.float64)


# -- captum / shap on YOLOv8: expected to fail (reused max-pool, unsupported SiLU) -----------------------------------

class ScoreModel(nn.Module):
    """The ultralytics model with the box score as its only output, (B, 1), for captum and shap."""

    def __init__(self, model: nn.Module, cls: int, candidates: np.ndarray):
        super().__init__()
        self.model = PredOnly(model)
        self.score = box_score(cls, candidates)

    def forward(self, x):
        return self.score(self.model(x)).unsqueeze(1)


def try_peer(name: str, fn: Callable[[], torch.Tensor]) -> dict:
    """Run a peer method; on failure keep the exception's type and first line (and the warnings it raised)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        try:
            attr = fn()
            ok, err = True, None
        except Exception as exc:  # noqa: BLE001 - recording the failure is the point
            attr, ok = None, False
            msg = str(exc).strip().splitlines()
            err = f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            err += f" (at {tb.filename.split('site-packages/')[-1]}:{tb.lineno})"
        elapsed = time.perf_counter() - t
    warns = sorted({str(w.message).splitlines()[0][:160] for w in caught})
    return {"name": name, "ok": ok, "error": err, "warnings": warns, "time": elapsed, "attr": attr}


def captum_deeplift(model: nn.Module, x: torch.Tensor, x0: torch.Tensor, shap_refs: torch.Tensor | None = None):
    from captum.attr import DeepLift, DeepLiftShap

    if shap_refs is None:
        return DeepLift(model).attribute(x.unsqueeze(0), baselines=x0.unsqueeze(0), target=0)[0].detach()
    return DeepLiftShap(model).attribute(x.unsqueeze(0), baselines=shap_refs, target=0)[0].detach()


def shap_deep(model: nn.Module, x: torch.Tensor, background: torch.Tensor):
    import shap

    values = shap.DeepExplainer(model, background).shap_values(x.unsqueeze(0))
    v = values[0] if isinstance(values, list) else values
    v = torch.as_tensor(np.asarray(v))
    return v.reshape(-1, *x.shape)[0] if v.numel() >= x.numel() else v


# -- the small ReLU CNN where the DeepLIFT peers work --------------------------------------------------------------

class SmallReluCNN(nn.Module):
    """conv → ReLU → pool → conv → ReLU → pool → linear (every ReLU/pool a separate module, as captum needs).
    `pool=True`: 2×2 max-pools; `pool=False`: 2×2 average pools (linear, so only the ReLU rule is compared)."""

    def __init__(self, classes: int = 10, pool: bool = True):
        super().__init__()
        p = nn.MaxPool2d if pool else nn.AvgPool2d
        self.c1, self.r1, self.p1 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), p(2)
        self.c2, self.r2, self.p2 = nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), p(2)
        self.fc = nn.Linear(16 * 8 * 8, classes)

    def forward(self, x):
        x = self.p1(self.r1(self.c1(x)))
        x = self.p2(self.r2(self.c2(x)))
        return self.fc(x.flatten(1))


def small_cnn_check(seed: int = 0, n: int = 8, k: int = 4, target: int = 3, repeats: int = 5,
                    pool: bool = True) -> dict:
    """relprop.attribute vs captum DeepLift (rescale) and DeepLiftShap (K references) on SmallReluCNN, float64:
    max |difference| of the attributions, completeness, and time (median of `repeats`)."""
    import statistics

    import relprop
    from captum.attr import DeepLift, DeepLiftShap

    torch.manual_seed(seed)
    model = SmallReluCNN(pool=pool).double().eval()
    x = torch.randn(n, 3, 32, 32, dtype=torch.float64)
    x0 = 0.1 * torch.randn(n, 3, 32, 32, dtype=torch.float64)
    refs = 0.1 * torch.randn(k, 3, 32, 32, dtype=torch.float64)
    fn = lambda y: y[:, target]  # noqa: E731
    graph = relprop.relevance_graph(model, x)

    def med(f):
        f()  # warm-up
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = f()
            ts.append(time.perf_counter() - t)
        return out, statistics.median(ts)

    (ours, delta), t_ours = med(lambda: relprop.attribute(graph, x, x0, fn))
    (_, _), t_ours_trace = med(lambda: relprop.attribute(model, x, x0, fn))
    theirs, t_captum = med(lambda: DeepLift(model).attribute(x, baselines=x0, target=target).detach())
    (ours_k, _), t_ours_k = med(lambda: relprop.attribute(graph, x, refs.unsqueeze(1), fn))
    theirs_k, t_captum_k = med(lambda: DeepLiftShap(model).attribute(x, baselines=refs, target=target).detach())
    with torch.no_grad():
        fwd, t_fwd = med(lambda: model(x))
        diff = fwd[:, target] - model(x0)[:, target]
    return {
        "model": f"conv-ReLU-{'maxpool' if pool else 'avgpool'} ×2, linear; 8×3×32×32",
        "deeplift_max_abs_diff": float((ours - theirs).abs().max()),
        "deeplift_max_rel_diff": float(((ours - theirs).abs().max() / theirs.abs().max())),
        "deepliftshap_max_abs_diff": float((ours_k - theirs_k).abs().max()),
        "relprop_completeness_max": float((ours.flatten(1).sum(1) - diff).abs().max()),
        "captum_completeness_max": float((theirs.flatten(1).sum(1) - diff).abs().max()),
        "relprop_delta_max": float(delta.abs().max()),
        "time_s": {"forward": t_fwd, "relprop": t_ours, "relprop_with_trace": t_ours_trace, "captum_deeplift": t_captum,
                   "relprop_k": t_ours_k, "captum_deepliftshap": t_captum_k},
        "k": k,
    }

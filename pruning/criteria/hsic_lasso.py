"""HSIC-Lasso feature selection (Yamada et al., 2014) applied to filters: which filters carry the target.

Per layer, each filter k gives a feature over N calibration images; its Gaussian Gram matrix K_k (N x N) is
centred and normalised, K̄_k = ΓK_kΓ / ||ΓK_kΓ||_F with Γ = I - 11ᵀ/N, and so is the Gram matrix L̄ of the target.
The coefficients solve the non-negative Lasso

    min_{α ≥ 0}  ½ ||L̄ − Σ_k α_k K̄_k||²_F + λ ||α||₁,

which, with Q_ij = <K̄_i, K̄_j>_F and c_k = <K̄_k, L̄>_F (= normalised HSIC), is ½αᵀQα − cᵀα + λΣα, solved here
by accelerated projected gradient.  Filters with zero or the smallest α go first.
"""

from __future__ import annotations

import torch


def gaussian_gram(features: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gaussian-kernel Gram matrix (N, N) of N samples, the rows of `features` (N, ...)."""
    return gaussian_grams(features.unsqueeze(0), sigma)[0]


def gaussian_grams(features: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Gram matrices (C, N, N) of C features over the same N samples, `features` (C, N, ...), in one batch.

    The bandwidth defaults to the median heuristic per matrix: sigma² = median of the positive squared distances
    / 2, so the kernel is scale-free across filters of very different magnitudes.
    """
    x = features.reshape(features.shape[0], features.shape[1], -1).double()
    sq = torch.cdist(x, x).pow(2)
    if sigma is None:
        masked = torch.where(sq > 0, sq, torch.full_like(sq, float("nan"))).flatten(1)
        s2 = torch.nanmedian(masked, dim=1).values / 2
        s2 = torch.where(torch.isnan(s2), torch.ones_like(s2), s2)
    else:
        s2 = torch.full((x.shape[0],), float(sigma) ** 2, dtype=sq.dtype)
    return torch.exp(-sq / (2 * s2.clamp_min(1e-12))[:, None, None])


def centre_normalise(gram: torch.Tensor) -> torch.Tensor:
    """ΓKΓ / ||ΓKΓ||_F for one (N, N) or a batch (C, N, N) of Gram matrices (zero where the centred matrix
    vanishes, e.g. a constant feature)."""
    centred = gram - gram.mean(-2, keepdim=True) - gram.mean(-1, keepdim=True) + gram.mean((-2, -1), keepdim=True)
    norm = torch.linalg.matrix_norm(centred)[..., None, None]
    return torch.where(norm > 1e-12, centred / norm.clamp_min(1e-12), torch.zeros_like(centred))


def nonnegative_lasso(q: torch.Tensor, c: torch.Tensor, lam: float, iters: int = 20000,
                      tol: float = 1e-12) -> torch.Tensor:
    """argmin_{α≥0} ½αᵀQα − cᵀα + λΣα (Q positive semi-definite) by accelerated projected gradient (FISTA)
    with adaptive restart: vectorised, so a layer of hundreds of filters takes milliseconds."""
    lipschitz = _largest_eigenvalue(q) if q.numel() else 0.0
    if lipschitz <= 0:
        return torch.zeros_like(c)
    step = 1.0 / lipschitz
    alpha = torch.zeros_like(c)
    y, t = alpha.clone(), 1.0
    for _ in range(iters):
        new = torch.clamp(y - step * (q @ y - c + lam), min=0.0)
        if float((new - alpha) @ (y - new)) > 0:  # the momentum points uphill: restart from the last point
            y, t = alpha.clone(), 1.0
            continue
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = new + ((t - 1) / t_next) * (new - alpha)
        change = float((new - alpha).abs().max())
        alpha, t = new, t_next
        if change < tol:
            break
    return alpha


def _largest_eigenvalue(q: torch.Tensor, iters: int = 100) -> float:
    """Largest eigenvalue of a PSD matrix by power iteration, padded by 1% (a step bound needs no more)."""
    v = torch.ones(q.shape[0], dtype=q.dtype) / q.shape[0] ** 0.5  # Q ≥ 0 entrywise here, so never orthogonal
    value = 0.0
    for _ in range(iters):
        w = q @ v
        norm = float(torch.linalg.vector_norm(w))
        if norm == 0:
            return 0.0
        v, previous, value = w / norm, value, norm
        if abs(value - previous) <= 1e-9 * value:
            break
    return 1.01 * value


def hsic_lasso(filter_features: torch.Tensor, target: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """HSIC-Lasso coefficient of each filter: `filter_features` is (C, N, ...) — filter k's output on N images —
    and `target` (N, ...) the layer's target output on the same images.  Returns α (C,), float64, α ≥ 0.
    """
    if filter_features.shape[1] != target.shape[0]:
        raise ValueError(
            f"HSIC-Lasso needs the same images for filters and target: {filter_features.shape[1]} vs {target.shape[0]}"
        )
    if target.shape[0] < 3:
        raise ValueError(f"HSIC-Lasso needs at least 3 calibration images, got {target.shape[0]}")
    kbar = centre_normalise(gaussian_grams(filter_features))  # (C, N, N)
    lbar = centre_normalise(gaussian_gram(target))
    flat = kbar.reshape(kbar.shape[0], -1)
    q = flat @ flat.T
    c = flat @ lbar.reshape(-1)
    return nonnegative_lasso(q, c, lam)

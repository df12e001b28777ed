"""HSIC-Lasso feature selection (Yamada et al., 2014) applied to filters: which filters carry the target.

Per layer, each filter k gives a feature over n samples; its Gaussian Gram matrix K_k (n x n) is centred and
normalised, K̄_k = ΓK_kΓ / ||ΓK_kΓ||_F with Γ = I - 11ᵀ/n, and so is the Gram matrix L̄ of the target.  The
coefficients solve the non-negative Lasso

    min_{α ≥ 0}  ½ ||L̄ − Σ_k α_k K̄_k||²_F + λ ||α||₁,

which, with Q_ij = <K̄_i, K̄_j>_F and c_k = <K̄_k, L̄>_F (= normalised HSIC), is ½αᵀQα − cᵀα + λΣα.

- `hsic_lasso`: the coefficients at one λ (accelerated projected gradient), on full n x n Gram matrices.
- `hsic_path_scores`: what the criterion uses — the Block HSIC Lasso design (`block_grams`, O(n·B) per filter, so
  n can be large enough for stable scores) and the order in which filters enter the regularisation path
  (`lasso_path_scores`, exact non-negative LARS), then the KKT gradient for those that never enter: a full order,
  where the λ = 0 coefficients leave most filters tied at exactly 0.
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

# --- the regularisation path: a full order of the filters of one layer ---------------------------------------------


def block_grams(features: torch.Tensor, block: int = 20, perms: int = 3, seed: int = 0,
                standardise: bool = True) -> torch.Tensor:
    """Block HSIC Lasso design (Climente-González et al. 2019): vec of the centred Gaussian Gram matrices of
    `features` (C, n, d) — C features over n samples — over blocks of `block` samples, for `perms` seeded random
    partitions of the samples, concatenated and normalised to unit norm per feature: (C, perms·⌊n/block⌋·block²).

    Each dimension is standardised over the samples first (unless `standardise` is False: the caller weighed the
    dimensions) and the bandwidth is the median heuristic (per feature, over the first partition's in-block pairs),
    so the kernel is scale-free; a constant feature gives an all-zero row.  The cost is
    O(n·block) per feature instead of O(n²), which is what lets many samples keep the scores stable.
    """
    c, n, d = features.shape
    if n < 3:
        raise ValueError(f"HSIC-Lasso needs at least 3 samples, got {n}")
    block = max(2, min(block, n))
    x = features.float()
    if standardise:
        std = x.std(1, keepdim=True)
        x = torch.where(std > 1e-6 * x.abs().amax(1, keepdim=True).clamp_min(1e-30),
                        (x - x.mean(1, keepdim=True)) / std.clamp_min(1e-30), torch.zeros_like(x))
    g = torch.Generator().manual_seed(seed)
    nb = n // block
    index = torch.stack([torch.randperm(n, generator=g)[: nb * block] for _ in range(perms)]).reshape(-1, block)
    xb = x[:, index]  # (C, perms·nb, block, d)
    sq = torch.cdist(xb, xb).pow(2) if d > 1 else (xb - xb.transpose(-1, -2)).pow(2)  # (C, P, block, block)
    upper = torch.triu_indices(block, block, 1)
    pairs = sq[:, :nb, upper[0], upper[1]].reshape(c, -1)  # the first partition's pairs set the bandwidth
    med = pairs.median(1).values
    s2 = (torch.where(med > 0, med, pairs.mean(1)) / 2).clamp_min(1e-12)  # mostly-constant (clipped) features
    grams = torch.exp(-sq / (2 * s2)[:, None, None, None])
    centred = grams - grams.mean(-2, keepdim=True) - grams.mean(-1, keepdim=True) + grams.mean((-2, -1), keepdim=True)
    flat = centred.reshape(c, -1).double()
    norm = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    return torch.where(norm > 1e-6, flat / norm.clamp_min(1e-30), torch.zeros_like(flat))


def lasso_path_scores(q: torch.Tensor, c: torch.Tensor, alive: torch.Tensor | None = None, lam: float = 0.0,
                      ridge: float = 1e-8) -> torch.Tensor:
    """A full order of the features of min_{α≥0} ½αᵀQα − cᵀα + λΣα from its regularisation path (Q PSD).

    The path is followed exactly from λ_max = max c (no feature active) down to `lam` by the non-negative LARS
    homotopy (Efron et al. 2004, with the Lasso drop step; Yamada et al. 2014 rank by it): on each segment the
    active coefficients move linearly, α_A(λ) = Q_AA⁻¹(c_A − λ1), until an inactive gradient c_j − (Qα)_j reaches
    λ (j enters) or an active coefficient reaches 0 (it leaves).  A feature in the support at `lam` scores the λ
    at which it last entered (> lam), so {score > t} is the support at λ = t for every t ≥ lam; a feature outside
    it scores its KKT gradient c_j − (Qα)_j − λ ≤ 0 there (how far it is from entering, in [−1, 0] for unit-norm
    rows; less 1e-9·(1 − c_j), so that gradients equal up to rounding are ordered by c_j); a dead feature (`alive` False, e.g. a constant filter) scores −2, below all.  `ridge` is added to the
    diagonal of Q (the elastic net, Zou & Hastie 2005): Q_AA stays invertible when features are collinear, and
    a larger ridge spreads the path over near-duplicate features instead of picking one of them at random.
    """
    k = c.shape[0]
    q, c = q.double(), c.double()
    alive = torch.ones(k, dtype=torch.bool) if alive is None else alive.bool()
    q = q + ridge * torch.eye(k, dtype=q.dtype)
    alpha = torch.zeros(k, dtype=torch.float64)
    entered = torch.full((k,), float("nan"), dtype=torch.float64)
    order: list[int] = []  # the active set, in the order of `inverse`
    inverse = torch.zeros(0, 0, dtype=torch.float64)  # (Q_AA)⁻¹, updated by one row/column per event
    eps = 1e-12
    live_c = torch.where(alive, c, torch.full_like(c, -float("inf")))
    lam_now = float(live_c.max()) if k and alive.any() else -float("inf")
    dropped = -1  # left on the last step: may not re-enter at once

    def add(j: int) -> None:
        nonlocal inverse
        b = q[order, j]
        hb = inverse @ b
        schur = float(q[j, j] - b @ hb)
        if schur <= 1e-14 * float(q[j, j]) or len(order) % 64 == 63:  # collinear or drifting: invert afresh
            order.append(j)
            inverse = torch.linalg.inv(q[order][:, order])
            return
        top = inverse + torch.outer(hb, hb) / schur
        inverse = torch.cat([torch.cat([top, -hb[:, None] / schur], 1),
                             torch.cat([-hb[None] / schur, torch.ones(1, 1, dtype=q.dtype) / schur], 1)])
        order.append(j)

    def remove(j: int) -> None:
        nonlocal inverse
        p = order.index(j)
        keep = [i for i in range(len(order)) if i != p]
        inverse = inverse[keep][:, keep] - torch.outer(inverse[keep, p], inverse[p, keep]) / inverse[p, p]
        order.pop(p)

    if lam_now > lam:
        first = int(torch.argmax(live_c))
        add(first)
        entered[first] = lam_now
        for _ in range(4 * k + 10):
            idx = torch.tensor(order)
            d = inverse.sum(1)  # Q_AA⁻¹ 1: dα_A/dt with t = λ_now − λ
            a = q[:, idx] @ d  # d(Qα)/dt
            grad = c - q[:, idx] @ alpha[idx]
            span = lam_now - lam
            can = alive & (1 - a > eps)
            can[idx] = False
            if dropped >= 0:
                can[dropped] = False
            t_in = torch.where(can, (lam_now - grad) / (1 - a).clamp_min(eps), torch.full_like(grad, float("inf")))
            t_out = torch.where(d < -eps, -alpha[idx] / d.clamp_max(-eps), torch.full_like(d, float("inf")))
            step_in, j_in = (float(v) for v in t_in.clamp_min(0).min(0))
            step_out, p_out = (float(v) for v in t_out.clamp_min(0).min(0))
            step = min(step_in, step_out, span)
            alpha[idx] = (alpha[idx] + step * d).clamp_min(0)
            lam_now -= step
            dropped = -1
            if step >= span:
                break
            if step_out <= step_in:
                dropped = order[int(p_out)]
                alpha[dropped] = 0.0
                remove(dropped)
                if not order:  # every coefficient left: go on from the largest gradient
                    best = torch.where(alive, c - q @ alpha, torch.full_like(c, -float("inf")))
                    lam_now = min(lam_now, float(best.max()))
                    if lam_now <= lam:
                        break
                    add(int(torch.argmax(best)))
                    entered[order[-1]] = lam_now
            else:
                add(int(j_in))
                entered[int(j_in)] = lam_now
    active = torch.zeros(k, dtype=torch.bool)
    active[order] = True
    grad = c - q @ alpha - lam
    # outside the support: the KKT gradient (≤ 0 up to rounding), ties (e.g. rounding to 0) broken by c itself
    outside = grad.clamp_max(0) - 1e-9 * (1 - c.clamp(-1, 1))
    scores = torch.where(active, entered, outside)
    return torch.where(alive, scores, torch.full_like(scores, -2.0))


def hsic_path_scores(filter_features: torch.Tensor, target: torch.Tensor, *, lam: float = 0.0, block: int = 20,
                     perms: int = 3, seed: int = 0, ridge: float = 1e-8) -> torch.Tensor:
    """Block-HSIC-Lasso path scores (see `lasso_path_scores`) of C features against a target over n samples:
    `filter_features` (C, n, d), standardised here, and `target` (n, D), used as given (weigh its dimensions
    first).  Returns (C,) float64, a full order (higher = keep)."""
    if filter_features.shape[1] != target.shape[0]:
        raise ValueError(
            f"HSIC-Lasso needs the same samples for filters and target: {filter_features.shape[1]} vs {target.shape[0]}"
        )
    kbar = block_grams(filter_features, block, perms, seed)
    lbar = block_grams(target.reshape(1, target.shape[0], -1), block, perms, seed, standardise=False)[0]
    alive = torch.linalg.vector_norm(kbar, dim=1) > 0.5
    return lasso_path_scores(kbar @ kbar.T, kbar @ lbar, alive, lam=lam, ridge=ridge)

"""HSIC-Lasso: picks filters that carry the target, and solves its convex problem exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from pruning.criteria.hsic_lasso import centre_normalise, gaussian_gram, hsic_lasso, nonnegative_lasso


def test_planted_informative_filters_get_the_largest_coefficients():
    g = torch.Generator().manual_seed(0)
    n = 40
    z1, z2 = torch.randn(n, generator=g), torch.randn(n, generator=g)
    target = torch.stack([z1, z2.sin()], 1)  # what the layer must produce
    informative = [z1[:, None] + 0.05 * torch.randn(n, 6, generator=g), (z2.sin()[:, None] * torch.ones(n, 6))]
    noise = [torch.randn(n, 6, generator=g) for _ in range(6)]
    feats = torch.stack(informative + noise)  # filters 0, 1 carry the target
    alpha = hsic_lasso(feats, target, lam=0.0)
    assert set(alpha.argsort(descending=True)[:2].tolist()) == {0, 1}
    assert alpha[2:].max() < 0.5 * alpha[:2].min()


def test_coordinate_descent_matches_a_generic_solver_on_a_tiny_case():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(4, 7, 3, generator=g, dtype=torch.float64)
    target = torch.randn(7, 2, generator=g, dtype=torch.float64)
    lam = 0.01
    alpha = hsic_lasso(feats, target, lam=lam)

    # brute force, straight from the definition: ½||L̄ − Σ α_k K̄_k||²_F + λ Σ α, α ≥ 0
    kbar = np.stack([centre_normalise(gaussian_gram(f)).numpy() for f in feats])
    lbar = centre_normalise(gaussian_gram(target)).numpy()
    objective = lambda a: 0.5 * np.sum((lbar - np.tensordot(a, kbar, 1)) ** 2) + lam * a.sum()
    best = minimize(objective, np.full(4, 0.1), bounds=[(0, None)] * 4, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
    assert objective(alpha.numpy()) <= best.fun + 1e-9
    np.testing.assert_allclose(alpha.numpy(), best.x, atol=1e-4)


def test_large_lambda_zeroes_every_coefficient():
    q = torch.eye(3, dtype=torch.float64)
    c = torch.tensor([0.2, 0.5, 0.1], dtype=torch.float64)
    assert torch.equal(nonnegative_lasso(q, c, lam=1.0), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(nonnegative_lasso(q, c, lam=0.1), torch.tensor([0.1, 0.4, 0.0], dtype=torch.float64))


def test_centred_normalised_gram_has_unit_norm_and_zero_means():
    k = centre_normalise(gaussian_gram(torch.randn(9, 4)))
    assert torch.linalg.matrix_norm(k).item() == pytest.approx(1.0)
    assert k.sum(0).abs().max() < 1e-10


def test_mismatched_images_and_too_few_images_are_refused():
    with pytest.raises(ValueError, match="same images"):
        hsic_lasso(torch.randn(2, 5, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="at least 3"):
        hsic_lasso(torch.randn(2, 2, 3), torch.randn(2, 3))


# --- the regularisation path (what the criterion ranks by) ---------------------------------------------------------

from pruning.criteria.hsic_lasso import block_grams, hsic_path_scores, lasso_path_scores  # noqa: E402


def _design(seed: int, n: int = 60, k: int = 12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64)
    x[:, 5] = 0.9 * x[:, 4] + 0.3 * x[:, 3] + 0.2 * torch.randn(n, generator=g, dtype=torch.float64)  # correlated
    x = x / x.norm(dim=0)
    y = x[:, :3].sum(1) - 0.5 * x[:, 7] + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return x.T @ x, x.T @ y


@pytest.mark.parametrize("seed", range(8))
def test_path_scores_give_the_lasso_support_at_every_lambda(seed):
    """{score > λ} is exactly the support of the non-negative Lasso solved at λ (the path is followed exactly)."""
    q, c = _design(seed)
    scores = lasso_path_scores(q, c, ridge=0.0)
    for lam in (0.5, 0.2, 0.05, 0.01, 1e-3):
        alpha = nonnegative_lasso(q, c, lam)
        assert set((scores > lam).nonzero().flatten().tolist()) == set((alpha > 1e-7).nonzero().flatten().tolist())
    outside = scores <= 0
    grad = c - q @ nonnegative_lasso(q, c, 0.0)
    assert torch.all(scores[outside] <= 1e-12) and torch.all(grad[outside] <= 1e-6)  # KKT gradients, not 0
    assert torch.argmax(scores) == torch.argmax(c)  # the first to enter carries the most HSIC


def _redundant_layer(seed: int = 0, n: int = 400):
    """A layer of 24 filters: 3 carry the target, 21 are noisy copies of them (what a wide layer looks like)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(3, n, generator=g)
    target = torch.stack([z[0], z[1].tanh(), z[2] ** 2], 1)
    copies = [z[i % 3] + (0.2 + 0.05 * i) * torch.randn(n, generator=g) for i in range(21)]
    return torch.stack([*z, *copies])[:, :, None], target


def test_lambda_zero_coefficients_tie_and_path_scores_give_a_full_order_independent_of_channel_index():
    """Issue 17: at λ = 0 most redundant filters get α = 0 exactly, so which of them a plan removes was decided by
    channel index.  The path order has no ties, and permuting the channels permutes the scores: the k removed
    filters are the same filters in any channel order."""
    feats, target = _redundant_layer()
    alpha = hsic_lasso(feats[:, :200, 0], target[:200])  # the old per-layer score
    assert int((alpha == 0).sum()) >= 5  # the premise: many exact ties
    scores = hsic_path_scores(feats, target)
    assert len(torch.unique(scores)) == len(scores)
    perm = torch.randperm(len(feats), generator=torch.Generator().manual_seed(3))
    permuted = hsic_path_scores(feats[perm], target)
    assert torch.allclose(permuted, scores[perm], atol=1e-9)
    for k in (4, 8, 12, 20):
        assert set(perm[torch.argsort(permuted)[:k]].tolist()) == set(torch.argsort(scores)[:k].tolist())
    assert set(torch.argsort(scores, descending=True)[:3].tolist()) == {0, 1, 2}  # the filters the copies copy


def test_block_grams_are_unit_rows_and_a_constant_feature_is_zero():
    x = torch.randn(3, 100, 1)
    x[1] = 4.0
    k = block_grams(x, block=10, perms=2)
    assert k.shape == (3, 2 * 10 * 100)
    assert torch.allclose(torch.linalg.vector_norm(k, dim=1), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.equal(hsic_path_scores(x, x[0])[1], torch.tensor(-2.0, dtype=torch.float64))  # dead: lowest

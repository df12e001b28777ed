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

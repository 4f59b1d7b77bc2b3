"""Scores: LAC, its smoothing, and VRCP's lower bounds (sound against sampling and PGD)."""

import pytest
import torch

from robustlab.conformal import lac_lower_bounds, lac_scores, smoothed_scores
from robustlab.conformal.attack import score_attack
from robustlab.conformal.scores import pair_matrix
from robustlab.threat import LpBall


def test_pair_matrix_rows():
    C = pair_matrix(3)
    assert C.shape == (9, 3)
    assert C[1].tolist() == [-1.0, 1.0, 0.0]  # y = 0, j = 1: z_1 - z_0
    assert C[4].abs().sum() == 0  # y == j


def test_smoothed_scores_tend_to_the_scores_with_small_noise(mlp, digits):
    x = digits.x[:6]
    g = torch.Generator().manual_seed(0)
    s = smoothed_scores(mlp, x, 1e-4, 16, generator=g)
    assert torch.allclose(s, lac_scores(mlp, x), atol=1e-3)
    s = smoothed_scores(mlp, x, 0.5, 64, batch_size=100, generator=g)
    assert bool(((s >= 0) & (s <= 1)).all())
    assert torch.allclose(s.sum(1), torch.full((6,), 9.0, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("method", ["ibp", "crown"])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_lower_bounds_hold_at_sampled_and_attacked_points(mlp, digits, method, norm):
    x, y = digits.x[:8], digits.y[:8]
    eps = 0.03 if norm == "inf" else 0.2
    threat = LpBall(norm, eps, digits.lower, digits.upper)
    low = lac_lower_bounds(mlp, x, threat, method)
    tol = 1e-5
    pts = threat.sample(x, 32, torch.Generator().manual_seed(0))
    for p in pts:
        assert bool((lac_scores(mlp, p) >= low - tol).all())
    adv = score_attack(mlp, x, y, threat, steps=20)
    assert bool((lac_scores(mlp, adv) >= low - tol).all())
    assert bool((low <= lac_scores(mlp, x) + tol).all())


def test_lower_bounds_are_tight_at_zero_radius(mlp, digits):
    x = digits.x[:4]
    low = lac_lower_bounds(mlp, x, LpBall("inf", 0.0, digits.lower, digits.upper))
    assert torch.allclose(low, lac_scores(mlp, x), atol=1e-4)

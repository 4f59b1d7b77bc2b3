"""Projected gradient ascent of an objective: it climbs, stays in the threat model, keeps the best
iterate, takes a warm start and averages random objectives (EOT)."""

import pytest
import torch

from robustlab.adaptive import Ascent, ascend
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall


def test_linear_objective_reaches_the_corner_of_the_linf_ball():
    x0 = torch.full((3, 4), 0.5)
    threat = LpBall("inf", 0.1, 0.0, 1.0)
    x = ascend(lambda x: x.sum(1), x0, threat, steps=10)
    assert torch.allclose(x, torch.full((3, 4), 0.6), atol=1e-6)


def test_l2_ball_and_box_are_kept():
    x0 = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    threat = LpBall("2", 0.3, 0.0, 1.0)
    x = Ascent(steps=15)(lambda x: -((x - 2) ** 2).sum(1), x0, threat)
    assert float((x - x0).norm(dim=1).max()) <= 0.3 + 1e-6
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_warm_start_and_zero_radius():
    x0 = torch.zeros(2, 3)
    threat = LpBall("inf", 0.2, -1.0, 1.0)
    start = torch.full((2, 3), 0.5)  # projected back to the ball's corner
    x = Ascent(steps=1, step_size=0.0)(lambda x: x.sum(1), x0, threat, start)
    assert torch.allclose(x, torch.full((2, 3), 0.2))
    assert torch.equal(ascend(lambda x: x.sum(1), x0, LpBall("inf", 0.0, -1.0, 1.0)), x0)


def test_eot_averages_a_random_objective():
    g = torch.Generator().manual_seed(0)

    def noisy(x):  # the mean gradient points up, single draws are noisy
        return (x * (1 + 3 * torch.randn(x.shape, generator=g))).sum(1)

    x = Ascent(steps=20, eot=16)(noisy, torch.zeros(4, 6), LpBall("inf", 0.1, -1.0, 1.0))
    assert float(x.mean()) > 0.05


def test_bad_parameters():
    with pytest.raises(RobustlabError, match="steps"):
        Ascent(steps=0)

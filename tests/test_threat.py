import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.threat import Box, LpBall


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_project_and_sample_stay_inside(norm):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 1, 8, 8, generator=g)
    ball = LpBall(norm, 0.3)
    far = x0 + 3 * torch.randn(16, 1, 8, 8, generator=g)
    p = ball.project(x0, far)
    assert ball.contains(x0, p).all()
    assert p.min() >= 0 and p.max() <= 1
    s = ball.sample(x0, 50, g)
    assert s.shape == (50, 16, 1, 8, 8)
    assert all(ball.contains(x0, si).all() for si in s)


def test_linf_projection_is_exact_on_interior():
    x0 = torch.full((1, 4), 0.5)
    ball = LpBall("inf", 0.1)
    x = torch.tensor([[0.55, 0.9, 0.1, 0.45]])
    assert torch.allclose(ball.project(x0, x), torch.tensor([[0.55, 0.6, 0.4, 0.45]]))


def test_l2_projection_scales_to_radius():
    x0 = torch.zeros(1, 2) + 0.5
    ball = LpBall(2, 0.1)
    p = ball.project(x0, torch.tensor([[0.8, 0.9]]))
    assert torch.allclose((p - x0).norm(), torch.tensor(0.1), atol=1e-6)


def test_box_of_ball_is_clipped_to_range():
    lo, hi = LpBall("inf", 0.2).box(torch.tensor([[0.1, 0.5, 0.95]]))
    assert torch.allclose(lo, torch.tensor([[0.0, 0.3, 0.75]]))
    assert torch.allclose(hi, torch.tensor([[0.3, 0.7, 1.0]]))


def test_box_threat():
    box = Box(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0]))
    x0 = torch.zeros(3, 2)
    s = box.sample(x0, 100)
    assert box.contains(None, s.reshape(-1, 2)).all()
    assert torch.equal(box.project(None, torch.tensor([[2.0, -3.0]])), torch.tensor([[1.0, -1.0]]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(norm="inf", eps=-0.1),
        dict(norm="3", eps=0.1),
        dict(norm="inf", eps=float("nan")),
        dict(norm="inf", eps=0.1, lower=1.0, upper=0.0),
    ],
)
def test_invalid_threat_models(kwargs):
    with pytest.raises(RobustlabError):
        LpBall(**kwargs)


def test_norm_aliases():
    assert LpBall("Linf", 0.1).norm == "inf"
    assert LpBall(float("inf"), 0.1).norm == "inf"
    assert LpBall("l2", 0.1).norm == "2"


def test_eps_values_one_validator_for_every_eps_list():
    from robustlab.threat import eps_values

    assert eps_values(["8/255", 0.1]) == [8 / 255, 0.1]
    for bad, match in (([], "eps must be a non-empty list"), ([-1.0], "eps must be a finite"),
                       (["x"], "eps expects a number")):  # fmt: skip
        with pytest.raises(RobustlabError, match=match):
            eps_values(bad)

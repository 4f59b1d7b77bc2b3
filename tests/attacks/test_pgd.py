import pytest
import torch
from torch import nn

from robustlab.attacks import PGD, get_attack, robustness_curve, run_attack
from robustlab.threat import LpBall


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 0.5)])
def test_pgd_stays_in_threat_model_and_range(mlp, digits, norm, eps):
    threat = LpBall(norm, eps)
    x, y = digits.x[:64], digits.y[:64]
    x_adv = PGD(steps=10, restarts=2)(mlp, x, y, threat)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert threat.contains(x, x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_restores_mode_and_leaves_no_gradients(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.0))
    model.train()
    run_attack(model, digits.subset(20), LpBall("inf", 0.1), PGD(steps=3))
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_pgd_is_deterministic_with_seed(mlp, digits):
    x, y = digits.x[:32], digits.y[:32]
    threat = LpBall("inf", 0.05)
    a = PGD(steps=5, seed=1)(mlp, x, y, threat)
    b = PGD(steps=5, seed=1)(mlp, x, y, threat)
    assert torch.equal(a, b)


def test_pgd_breaks_a_linear_classifier_exactly_where_it_should():
    """Two classes, logit difference w.x + b: the minimal Linf perturbation is margin / ||w||_1."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 2)
    x = torch.rand(200, 4) * 0.4 + 0.3
    y = lin(x).argmax(1)
    w = lin.weight[1] - lin.weight[0]
    margin = ((lin(x)[:, 1] - lin(x)[:, 0]).abs() / w.abs().sum()).detach()
    eps = 0.05
    x_adv = PGD(steps=30, random_start=False)(lin, x, y, LpBall("inf", eps))
    broken = lin(x_adv).argmax(1) != y
    assert torch.equal(broken[margin < eps * 0.99], torch.ones_like(broken[margin < eps * 0.99]))
    assert not broken[margin > eps * 1.01].any()


def test_curve_is_monotone_and_reuses_broken_points(mlp, digits):
    data = digits.subset(100)
    res = robustness_curve(mlp, data, [0.0, 0.05, 0.1, 0.2], "inf", PGD(steps=10))
    accs = [r.robust_accuracy for r in res]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] == res[0].clean_accuracy and accs[-1] < accs[1]
    assert res[2].n_attacked <= round(accs[1] * 100)


def test_registry():
    assert isinstance(get_attack("pgd", steps=3), PGD)

"""Holistic robust training: the closed-form / bisection solution of the HR inner problem is
feasible and meets an independently computed dual bound (a linear program per mu), its limits (ERM, pure poisoning, equal losses), monotonicity
in both radii, and the method's step."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize_scalar

from robustlab import zoo
from robustlab.data import load_digits_split
from robustlab.errors import RobustlabError
from robustlab.train import get_method
from robustlab.train.hr import hr_loss, hr_weights, poisoned_empirical
from robustlab.train.methods import StepContext


def dual_upper(losses: np.ndarray, alpha: float, r: float) -> float:
    """An upper bound on the HR inner maximum by weak duality, computed independently: for every
    mu > max l, ``max_q mu - exp(-r) exp(sum_i q_i log(mu - l_i))`` over the poisoning polytope
    (q_i in [0, 1/N], q_{N+1} in [0, alpha], sum q = 1; a linear program), minimised over mu."""
    n = len(losses)
    ell = np.append(losses, losses.max())
    bounds = [(0, 1 / n)] * n + [(0, alpha)]
    if r == 0:  # p = q: the linear program itself
        return -linprog(-ell, A_eq=np.ones((1, n + 1)), b_eq=[1.0], bounds=bounds).fun

    def upper(t: float) -> float:
        mu = losses.max() + math.exp(t)
        res = linprog(np.log(mu - ell), A_eq=np.ones((1, n + 1)), b_eq=[1.0], bounds=bounds)
        return mu - math.exp(-r) * math.exp(res.fun)

    res = minimize_scalar(upper, bounds=(-40, 25), method="bounded", options={"xatol": 1e-10})
    return float(res.fun)


@pytest.mark.parametrize("alpha, r", [(0.0, 0.1), (0.1, 0.0), (0.1, 0.1), (0.2, 0.5), (0.05, 1.0)])
def test_optimal_by_weak_duality(alpha, r):
    """Our weights are feasible (KL(q || p) <= r for the poisoned q) and reach the dual bound."""
    losses = torch.tensor([0.1, 0.5, 2.0, 0.05, 1.2, 0.7, 3.0, 0.3], dtype=torch.float64)
    p = hr_weights(losses, alpha, r)
    q = poisoned_empirical(losses, alpha)
    on = q > 0
    assert p.min() >= 0 and abs(float(p.sum()) - 1) < 1e-12 and abs(float(q.sum()) - 1) < 1e-12
    assert float((q[on] * torch.log(q[on] / p[on])).sum()) <= r + 1e-9
    value = float(p[:-1] @ losses + p[-1] * losses.max())
    upper = dual_upper(losses.numpy(), alpha, r)
    assert value <= upper + 1e-9 and upper - value < 1e-6
    assert float(losses.mean()) - 1e-12 <= value <= float(losses.max()) + 1e-12


def test_limits_and_monotonicity():
    losses = torch.tensor([0.2, 1.0, 0.4, 3.0, 0.1], dtype=torch.float64)
    assert torch.allclose(
        hr_weights(losses, 0.0, 0.0)[:-1], torch.full((5,), 0.2, dtype=torch.float64)
    )
    p = hr_weights(losses, 0.2, 0.0)  # pure poisoning: the smallest loss's mass moves to the worst
    assert p[4] == 0 and p[-1] == pytest.approx(0.2)
    flat = hr_weights(torch.ones(4), 0.1, 0.3)
    assert float(flat[:-1].sum() + flat[-1]) == pytest.approx(1.0)

    def value(a, r):
        return float(hr_loss(losses, a, r))

    assert value(0, 0) == pytest.approx(float(losses.mean()))
    for a in (0.0, 0.05, 0.2):
        vals = [value(a, r) for r in (0.0, 0.1, 1.0, 5.0)]
        assert vals == sorted(vals) and vals[-1] <= 3.0 + 1e-9
    for r in (0.0, 0.1, 1.0):
        vals = [value(a, r) for a in (0.0, 0.05, 0.2, 0.5)]
        assert vals == sorted(vals)


@pytest.mark.parametrize("kw", [{"alpha": 1.0}, {"alpha": -0.1}, {"r": -1.0}, {"r": math.inf}])
def test_bad_radii(kw):
    with pytest.raises(RobustlabError, match="alpha|r "):
        get_method("hr", **kw)


def test_step_weights_the_adversarial_losses():
    d = load_digits_split(train=True)
    torch.manual_seed(0)
    model = zoo.build("mlp")
    ctx = StepContext(0.1, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(0), model)
    out = get_method("hr", alpha=0.1, r=0.2).step(model, d.x[:32], d.y[:32], ctx)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.robust_correct.shape == (32,)
    plain = get_method("pgd-at").step(model, d.x[:32], d.y[:32],
                                      StepContext(0.1, 1.0, 0.0, 1.0, 10,
                                                  torch.Generator().manual_seed(0), model))  # fmt: skip
    # the HR loss bounds the mean loss from above
    assert float(out.loss.detach()) >= float(plain.loss.detach()) - 1e-5

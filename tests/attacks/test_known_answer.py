"""Attacks on a linear classifier, where the minimal adversarial perturbation has a closed form."""

import pytest
import torch

from robustlab.attacks import APGD, APGDT, FAB, FABT, CarliniWagnerL2, DeepFool, evaluate
from robustlab.data import Dataset
from robustlab.threat import LpBall
from tests.attacks.nets import interior_points, linear_classifier, minimal_distance

EPS = {"inf": 0.05, "2": 0.12}


@pytest.fixture(scope="module")
def problem():
    lin = linear_classifier(d=10, k=4).eval()
    x = interior_points(240, 10)
    with torch.no_grad():
        y = lin(x).argmax(1)
    return lin, x, y


def _broken(model, x, y, x_adv, threat):
    assert threat.contains(x, x_adv).all()
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def _check(dist, broken, eps):
    below, above = dist < 0.98 * eps, dist > eps
    assert below.sum() > 20 and above.sum() > 20  # the test exercises both sides
    assert broken[below].all(), f"missed {int((~broken[below]).sum())} points below eps"
    assert not broken[above].any()


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize(
    "attack",
    [
        APGD(n_iter=50, loss="dlr"),
        APGD(n_iter=50, loss="margin"),
        APGDT(n_iter=50, n_target_classes=3),
        FAB(n_iter=30),
        FABT(n_iter=30),
    ],
    ids=["apgd-dlr", "apgd-margin", "apgd-t", "fab", "fab-t"],
)
def test_attack_breaks_exactly_the_points_below_eps(problem, norm, attack):
    """(APGD on cross-entropy alone can miss some: the cross-entropy maximiser in the ball need
    not be misclassified; that is why the suites add the targeted DLR loss.)"""
    lin, x, y = problem
    eps = EPS[norm]
    threat = LpBall(norm, eps)
    broken = _broken(lin, x, y, attack(lin, x, y, threat), threat)
    _check(minimal_distance(lin, x, y, norm), broken, eps)


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("suite", ["fast", "standard"])
def test_ensemble_breaks_exactly_the_points_below_eps(problem, norm, suite):
    lin, x, y = problem
    eps = EPS[norm]
    data = Dataset("linear", x, y)
    res = evaluate(lin, data, [eps], norm, suite=suite, checks=False)
    broken = ~torch.tensor(res.robust[0])
    _check(minimal_distance(lin, x, y, norm), broken, eps)
    assert res.clean_accuracy == 1.0


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_fab_finds_the_minimal_perturbation(problem, norm):
    lin, x, y = problem
    big = LpBall(norm, 0.3)
    x_adv = FAB(n_iter=50, stop_at_eps=False)(lin, x, y, big)
    broken = _broken(lin, x, y, x_adv, big)
    dist = minimal_distance(lin, x, y, norm)
    inside = dist < 0.29
    delta = (x_adv - x).abs().amax(1) if norm == "inf" else (x_adv - x).norm(dim=1)
    assert broken[inside].all()
    assert torch.allclose(delta[inside], dist[inside], rtol=0.02, atol=1e-4)


def test_deepfool_l2_reaches_the_boundary_in_one_step(problem):
    lin, x, y = problem
    big = LpBall("2", 0.3)
    x_adv = DeepFool(overshoot=0.02)(lin, x, y, big)
    dist = minimal_distance(lin, x, y, "2")
    inside = dist < 0.25
    broken = _broken(lin, x, y, x_adv, big)
    assert broken[inside].all()
    delta = (x_adv - x).norm(dim=1)
    assert (delta[inside] <= dist[inside] * 1.5 + 1e-3).all()


def test_cw_l2_finds_near_minimal_perturbations(problem):
    lin, x, y = problem
    big = LpBall("2", 0.3)
    x_adv = CarliniWagnerL2(steps=200, search_steps=6, lr=0.01, stop_at_eps=False)(lin, x, y, big)
    dist = minimal_distance(lin, x, y, "2")
    inside = dist < 0.2
    broken = _broken(lin, x, y, x_adv, big)
    assert broken[inside].float().mean() > 0.95
    delta = (x_adv - x).norm(dim=1)
    ok = inside & broken
    assert (delta[ok] <= dist[ok] * 1.1 + 1e-3).all()

"""Expectation over transformation: on a model with random noise in its forward pass, gradients
averaged over several passes find adversarial examples that one-sample gradients miss."""

from dataclasses import replace

import pytest
import torch

from robustlab.attacks import APGD, PGD, evaluate
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall
from tests.attacks.nets import Shaky, interior_points, linear_classifier, minimal_distance

D, K = 64, 4


@pytest.fixture(scope="module")
def problem():
    lin = linear_classifier(d=D, k=K).eval()
    x = interior_points(160, D)
    with torch.no_grad():
        y = lin(x).argmax(1)
    dist = minimal_distance(lin, x, y, "inf")
    eps = float(dist.median())
    return lin, Shaky(lin, D, K).eval(), x, y, dist, eps


@pytest.mark.parametrize("attack", [APGD(n_iter=50), PGD(steps=50)], ids=["apgd", "pgd"])
def test_eot_breaks_points_that_one_sample_gradients_miss(problem, attack):
    lin, model, x, y, dist, eps = problem
    threat = LpBall("inf", eps)
    below = dist < 0.9 * eps
    rates = {}
    for eot in (1, 16):
        torch.manual_seed(0)
        x_adv = replace(attack, eot=eot)(model, x, y, threat)
        assert threat.contains(x, x_adv).all()
        with torch.no_grad():  # judged on the noise-free network: no luck involved
            broken = lin(x_adv).argmax(1) != y
        assert not broken[dist > eps].any()
        rates[eot] = float(broken[below].float().mean())
    assert rates[16] >= 0.75 and rates[16] >= rates[1] + 0.3, rates


def test_suite_with_eot_is_stronger_and_the_randomness_flag_fires(problem):
    lin, model, x, y, dist, eps = problem
    data = Dataset("shaky", x, y)
    out = {}
    for eot in (1, 8):
        torch.manual_seed(0)
        res = evaluate(model, data, [eps], "inf", suite="fast", eot=eot, checks=False)
        assert "randomized_model" in {f["name"] for f in res.flags}
        assert res.certified_skipped == 0 and res.certification == []  # no bounds on noise
        assert res.eot == eot and res.to_dict()["eot"] == eot
        out[eot] = res
    below = dist < 0.9 * eps
    broken = {e: ~torch.tensor(r.robust[0]) for e, r in out.items()}
    assert broken[8][below].float().mean() >= broken[1][below].float().mean() + 0.15
    assert out[8].robust_accuracy < out[1].robust_accuracy
    assert out[8].n_backward > 4 * out[1].n_backward  # 8 passes per gradient


@pytest.mark.parametrize("eot", [0, -1, 1.5, True])
def test_eot_must_be_a_positive_integer(mlp, digits, eot):
    with pytest.raises(RobustlabError, match="eot must be a positive integer"):
        evaluate(mlp, digits.subset(8), [0.1], "inf", eot=eot)

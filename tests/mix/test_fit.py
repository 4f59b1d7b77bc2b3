"""Fitting the transform and the mixing weight (MixedNUTS's margin rule) on a held-back split."""

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.mix import FitData, fit_mixture, mixed_log_probs, target_strength

SMALL = {"scale": (0.5, 2.0, 8.0), "power": (1.0, 3.0), "bias": (-1.0, 0.0, 1.0)}


def _fit_data(n=200, k=10, seed=0) -> FitData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    onehot = torch.nn.functional.one_hot(y, k).double()
    acc = torch.randn(n, k, generator=g, dtype=torch.float64) + 4 * onehot
    rob = torch.randn(n, k, generator=g, dtype=torch.float64) + 2 * onehot
    rob_adv = rob - torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 * onehot
    kept = (rob.argmax(1) == y) & (rob_adv.argmax(1) == y)
    return FitData(y, acc, rob, rob_adv, kept)


@pytest.mark.parametrize("q", [1.0, 0.95, 0.8, 0.5])
def test_fit_keeps_the_share_asked_and_the_margin_rule_holds(q):
    fd = _fit_data()
    f = fit_mixture(fd, q, SMALL)
    assert 0 < f.alpha <= 1 and f.fit_kept >= q - 1 / int(fd.kept.sum())
    assert 0 <= f.fit_clean_accuracy <= 1
    # the kept points stay correct whatever the accurate member says: the worst accurate logits
    # put all their mass on the robust member's runner-up
    if f.alpha < 1:
        k = fd.y[fd.kept]
        zr = fd.robust_adv[fd.kept]
        runner = zr.scatter(1, k[:, None], -torch.inf).argmax(1)
        worst = torch.nn.functional.one_hot(runner, 10).double() * 1e4
        out = mixed_log_probs(worst, zr, f.alpha, f.transform)
        correct = out.argmax(1) == k
        assert float(correct.double().mean()) >= q - 1 / len(k) - 1e-9


def test_full_strength_keeps_every_robust_point():
    assert fit_mixture(_fit_data(), 1.0, SMALL).fit_kept == pytest.approx(1.0)


def test_fit_rejects_bad_strength_and_empty_kept():
    fd = _fit_data()
    for q in (0.0, 1.5):
        with pytest.raises(RobustlabError, match="strength"):
            fit_mixture(fd, q, SMALL)
    none = FitData(fd.y, fd.accurate, fd.robust, fd.robust_adv, torch.zeros_like(fd.kept))
    with pytest.raises(RobustlabError, match="keeps no fit point"):
        fit_mixture(none, 0.9, SMALL)


def test_target_strength_is_the_constraint_of_mixednuts():
    fd = _fit_data()
    r = float(fd.kept.double().mean())  # the robust member's robust share of the fit points
    q = target_strength(fd, 0.02)
    assert q == pytest.approx(1 - 0.02 / r) and q * r == pytest.approx(r - 0.02)
    assert target_strength(fd, 0.0) == 1.0 and target_strength(fd, 5.0) == 1 / int(fd.kept.sum())
    with pytest.raises(RobustlabError, match="slack"):
        target_strength(fd, -0.1)
    none = FitData(fd.y, fd.accurate, fd.robust, fd.robust_adv, torch.zeros_like(fd.kept))
    with pytest.raises(RobustlabError, match="keeps no fit point"):
        target_strength(none, 0.02)

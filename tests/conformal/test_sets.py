"""Conformal thresholds and sets: the quantile by hand, coverage by simulation, RSCP+'s terms."""

import math

import pytest
import torch

from robustlab.conformal import RSCPPlus, conformal_quantile, split_sets, verified_sets
from robustlab.conformal.sets import hoeffding
from robustlab.errors import RobustlabError


def test_quantile_by_hand():
    s = torch.arange(1.0, 10.0)  # 9 scores
    assert conformal_quantile(s, 0.1) == 9.0  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(s, 0.5) == 5.0  # ceil(10 * 0.5) = 5th
    assert conformal_quantile(s, 0.05) == math.inf  # ceil(9.5) = 10 > 9
    for a in (0.0, 1.0, -0.1):
        with pytest.raises(RobustlabError, match="alpha"):
            conformal_quantile(s, a)


def test_split_coverage_is_at_least_one_minus_alpha_on_average():
    g = torch.Generator().manual_seed(0)
    hits = []
    for _ in range(400):
        s = torch.rand(51, generator=g)  # exchangeable: 50 calibration scores and a new one
        hits.append(float(s[50] <= conformal_quantile(s[:50], 0.2)))
    assert sum(hits) / len(hits) >= 0.8 - 3 * math.sqrt(0.16 / 400)


def test_sets_by_hand():
    scores = torch.tensor([[0.1, 0.5, 0.9]])
    assert split_sets(scores, 0.5).tolist() == [[True, True, False]]
    assert verified_sets(scores, 0.5).tolist() == [[True, True, False]]


def test_rscp_plus_terms_and_monotonicity():
    assert hoeffding(512, 0.001) == pytest.approx(math.sqrt(math.log(1000) / 1024))
    r = RSCPPlus(sigma=0.25, n=512, beta=0.001)
    cal = torch.linspace(0.01, 0.6, 99, dtype=torch.float64)
    tau = r.calibrate(cal, 0.1)
    b = hoeffding(512, 0.001)
    # the threshold is the corrected score of the ceil(100 * (0.9 + 0.002))-th calibration point
    assert tau == pytest.approx(float(torch.special.ndtri(cal[math.ceil(100 * 0.902) - 1] + b)))
    test = torch.rand(20, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    small, big = r.sets(test, tau, 0.1), r.sets(test, tau, 0.5)
    assert bool((small <= big).all()) and int(big.sum()) >= int(small.sum())
    with pytest.raises(RobustlabError, match="beta"):
        RSCPPlus(0.25, 512, beta=0.1).calibrate(cal, 0.1)

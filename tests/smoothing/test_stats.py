"""Smoothing decisions for given counts match a direct computation with scipy (Cohen et al. 2019:
PREDICT's two-sided binomial test, CERTIFY's one-sided Clopper-Pearson bound and radius)."""

import math

import pytest
import torch
from scipy import stats

from robustlab.smoothing import (
    ABSTAIN,
    certify_decision,
    certify_from_counts,
    lower_confidence_bound,
    predict_from_counts,
)

CASES = [(0, 100), (1, 100), (50, 100), (63, 100), (64, 100), (99, 100), (100, 100),
         (500, 1000), (530, 1000), (99_990, 100_000), (100_000, 100_000)]  # fmt: skip


@pytest.mark.parametrize("count, n", CASES)
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_radius_matches_scipy(count, n, alpha):
    # the two-sided exact interval at level 1 - 2 alpha has the one-sided bound as its low end
    direct = (
        stats.binomtest(count, n).proportion_ci(1 - 2 * alpha, method="exact").low if count else 0
    )
    assert lower_confidence_bound(count, n, alpha) == pytest.approx(direct, rel=1e-9, abs=1e-12)
    ok, r = certify_decision(count, n, alpha, 0.5)
    assert ok == (direct >= 0.5)
    if ok:
        assert r == pytest.approx(0.5 * stats.norm.ppf(direct), rel=1e-9, abs=1e-12)
    else:
        assert math.isnan(r)


def test_certify_from_counts_rows():
    counts0 = torch.tensor([[90, 10, 0], [5, 95, 0], [40, 30, 30]])
    counts = torch.tensor([[900, 100, 0], [480, 520, 0], [400, 300, 300]])
    classes, top, radii = certify_from_counts(counts0, counts, 1000, 0.001, 0.25)
    assert classes.tolist() == [0, ABSTAIN, ABSTAIN] and top.tolist() == [900, 520, 400]
    p = stats.beta.ppf(0.001, 900, 101)
    assert radii[0].item() == pytest.approx(0.25 * stats.norm.ppf(p))
    assert math.isnan(radii[1].item()) and math.isnan(radii[2].item())


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_abstention_matches_scipy(alpha):
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 60, (300, 4), generator=g)
    counts[:100, 0] += 80  # some clear winners
    ours = predict_from_counts(counts, alpha)
    for row, got in zip(counts.tolist(), ours.tolist(), strict=True):
        order = sorted(range(4), key=lambda c: -row[c])
        c1, c2 = row[order[0]], row[order[1]]
        p = stats.binomtest(c1, c1 + c2, 0.5).pvalue
        assert (got == ABSTAIN) == (p > alpha)
        if got != ABSTAIN:
            assert row[got] == c1

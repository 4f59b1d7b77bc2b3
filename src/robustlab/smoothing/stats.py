"""The statistics of randomized smoothing (Cohen et al. 2019, arXiv:1902.02918), with scipy.stats:
the two-sided binomial test of PREDICT and the one-sided Clopper-Pearson bound of CERTIFY."""

from __future__ import annotations

import math

from scipy import stats


def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion from ``count``
    successes in ``n`` trials (the ``alpha``-quantile of Beta(count, n - count + 1); 0 when
    count is 0). Equals statsmodels' ``proportion_confint(count, n, 2 * alpha, "beta")[0]``."""
    if count <= 0:
        return 0.0
    return float(stats.beta.ppf(alpha, count, n - count + 1))


def radius(p_lower: float, sigma: float) -> float:
    """The certified L2 radius ``sigma * Phi^-1(p_lower)`` (Cohen et al., Theorem 1)."""
    return float(sigma * stats.norm.ppf(p_lower))


def certify_decision(count_top: int, n: int, alpha: float, sigma: float) -> tuple[bool, float]:
    """``(certified, radius)`` for the selected class seen ``count_top`` times in ``n`` samples:
    abstain when the lower bound is below 1/2 (radius ``nan``), as Cohen et al.'s CERTIFY."""
    p = lower_confidence_bound(count_top, n, alpha)
    if p < 0.5:
        return False, math.nan
    return True, radius(p, sigma)


def binomial_pvalue(count_first: int, count_second: int) -> float:
    """Two-sided binomial test of ``count_first`` successes in ``count_first + count_second``
    trials against p = 1/2 (Cohen et al.'s PREDICT)."""
    total = count_first + count_second
    if total == 0:
        return 1.0
    return float(stats.binomtest(count_first, total, 0.5).pvalue)


def predict_decision(count_first: int, count_second: int, alpha: float) -> bool:
    """Whether PREDICT returns the top class (True) or abstains: abstain when p-value > alpha."""
    return binomial_pvalue(count_first, count_second) <= alpha

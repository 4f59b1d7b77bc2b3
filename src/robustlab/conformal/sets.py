"""Prediction sets with a coverage guarantee: split conformal (Vovk et al. 2005; Lei et al. 2018),
RSCP+ (Yan et al. 2024, "Provably Robust Conformal Prediction with Improved Efficiency": the
smoothed score's Monte Carlo estimate corrected by a Hoeffding bound on both sides) and the
verification-based sets of VRCP (Jeary et al. 2024: a label stays while a sound lower bound of
its score over the ball is under the threshold)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.errors import RobustlabError

FLOAT32_SLACK = 1e-5  # the calibration scores come from float32 forward passes; the bounds are
# exact-arithmetic bounds: a label is kept up to this much above the threshold (larger sets only)


def conformal_quantile(scores: Tensor, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest score (infinite when that exceeds n): the
    threshold under which a new exchangeable score falls with probability at least 1 - alpha."""
    if not 0 < alpha < 1:
        raise RobustlabError(f"alpha must lie in (0, 1); found {alpha}")
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return math.inf
    return float(torch.sort(scores.double()).values[rank - 1])


def hoeffding(n: int, beta: float) -> float:
    """One-sided Hoeffding bound on the error of a mean of ``n`` draws in [0, 1], probability
    ``beta`` of exceeding it."""
    return math.sqrt(math.log(1 / beta) / (2 * n))


@dataclass(frozen=True)
class RSCPPlus:
    """RSCP+'s calibration and sets for an L2 radius ``eps2`` (an Linf ball of radius e in d
    dimensions lies in the L2 ball of radius e * sqrt(d)): calibrate on
    ``Phi^-1(S_hat + b)`` at level ``1 - alpha + 2 beta``; a label y is in the set at x' when
    ``Phi^-1(S_hat(x', y) - b) - eps2 / sigma <= tau``. b: Hoeffding's bound for ``n`` draws."""

    sigma: float
    n: int
    beta: float = 0.001

    def calibrate(self, cal_smoothed: Tensor, alpha: float) -> float:
        if not 0 < self.beta < alpha / 2:
            raise RobustlabError(f"beta must lie in (0, alpha / 2); found {self.beta}")
        b = hoeffding(self.n, self.beta)
        upper = torch.special.ndtri((cal_smoothed + b).clamp(0, 1))
        return conformal_quantile(upper, alpha - 2 * self.beta)

    def sets(self, smoothed: Tensor, tau: float, eps2: float) -> Tensor:
        b = hoeffding(self.n, self.beta)
        lower = torch.special.ndtri((smoothed - b).clamp(0, 1))
        return lower - eps2 / self.sigma <= tau


def split_sets(scores: Tensor, tau: float) -> Tensor:
    """Labels whose score is at most the threshold: (N, K) bool."""
    return scores <= tau


def verified_sets(lower_scores: Tensor, tau: float) -> Tensor:
    """VRCP's sets: labels whose score could be under the threshold somewhere in the ball."""
    return lower_scores <= tau + FLOAT32_SLACK

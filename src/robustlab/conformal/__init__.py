"""Conformal prediction sets with coverage guarantees, clean and robust: split conformal, RSCP+
(randomized smoothing of the score, Yan et al. 2024) and verification-based sets (VRCP, Jeary et
al. 2024), with attacks on the sets."""

from robustlab.conformal.evaluate import METHODS, ConformalResult, conformal
from robustlab.conformal.scores import lac_lower_bounds, lac_scores, smoothed_scores
from robustlab.conformal.sets import RSCPPlus, conformal_quantile, split_sets, verified_sets

__all__ = [
    "METHODS",
    "ConformalResult",
    "RSCPPlus",
    "conformal",
    "conformal_quantile",
    "lac_lower_bounds",
    "lac_scores",
    "smoothed_scores",
    "split_sets",
    "verified_sets",
]

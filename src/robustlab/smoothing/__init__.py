"""Randomized smoothing (Cohen et al. 2019): PREDICT with abstention, CERTIFY with a certified L2
radius from a Clopper-Pearson bound, batched noise sampling, certified accuracy against radius."""

from robustlab.smoothing.core import (
    ABSTAIN,
    SmoothingResult,
    certified_curve,
    certify,
    certify_from_counts,
    predict,
    predict_from_counts,
    smooth,
)
from robustlab.smoothing.sampling import sample_counts
from robustlab.smoothing.stats import (
    binomial_pvalue,
    certify_decision,
    lower_confidence_bound,
    predict_decision,
    radius,
)

__all__ = [
    "ABSTAIN",
    "SmoothingResult",
    "binomial_pvalue",
    "certified_curve",
    "certify",
    "certify_decision",
    "certify_from_counts",
    "lower_confidence_bound",
    "predict",
    "predict_decision",
    "predict_from_counts",
    "radius",
    "sample_counts",
    "smooth",
]

"""Network sensitivity: how the loss and the (robust) accuracy move when the weights, their
precision or their noise change. Hessian traces (Hutchinson) and top eigenvalues (power
iteration) per layer, the diagonal empirical Fisher, weight-noise curves, and emulated float16,
bfloat16 and int8 precision."""

from robustlab.sensitivity.analyze import SensitivityResult, analyze
from robustlab.sensitivity.fisher import FisherResult, fisher_diagonal
from robustlab.sensitivity.hessian import (
    EigenEstimate,
    HutchinsonResult,
    TraceEstimate,
    hessian_vector_products,
    hutchinson,
    top_eigenvalues,
)
from robustlab.sensitivity.layers import Layer, layers, weight_layers
from robustlab.sensitivity.noise import NoiseCurves, noise_curves
from robustlab.sensitivity.precision import FORMATS, emulate, round_weights
from robustlab.sensitivity.precision_eval import (
    PrecisionResult,
    evaluate_precision,
    rank_correlation,
)

__all__ = [
    "FORMATS",
    "EigenEstimate",
    "FisherResult",
    "HutchinsonResult",
    "Layer",
    "NoiseCurves",
    "PrecisionResult",
    "SensitivityResult",
    "TraceEstimate",
    "analyze",
    "emulate",
    "evaluate_precision",
    "fisher_diagonal",
    "hessian_vector_products",
    "hutchinson",
    "layers",
    "noise_curves",
    "rank_correlation",
    "round_weights",
    "top_eigenvalues",
    "weight_layers",
]

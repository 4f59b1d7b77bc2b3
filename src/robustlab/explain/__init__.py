"""Explanations: attributions (saliency, input x gradient, Integrated Gradients, SmoothGrad,
occlusion, Grad-CAM, Sobol indices), Lipschitz / sensitivity estimates, and faithfulness metrics."""

from robustlab.explain.base import (
    REGISTRY,
    Explainer,
    ExplainResult,
    explain,
    get_explainer,
)
from robustlab.explain.gradcam import GradCAM
from robustlab.explain.gradients import InputXGradient, Saliency, SmoothGrad
from robustlab.explain.integrated import IntegratedGradients
from robustlab.explain.occlusion import Occlusion
from robustlab.explain.sobol import SobolIndices, sobol_indices
from robustlab.explain.sobol_attribution import SobolAttribution

__all__ = [
    "REGISTRY",
    "ExplainResult",
    "Explainer",
    "GradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "Occlusion",
    "Saliency",
    "SmoothGrad",
    "SobolAttribution",
    "SobolIndices",
    "explain",
    "get_explainer",
    "sobol_indices",
]

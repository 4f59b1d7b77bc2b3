"""Explanations: attributions (saliency, input x gradient, Integrated Gradients, SmoothGrad,
occlusion, OSA-DAS, Grad-CAM, Smooth Grad-CAM++, FullGrad, extremal perturbations, MoreauGrad, Sobol
indices), proof features, Lipschitz / sensitivity estimates, and faithfulness metrics."""

from robustlab.explain.base import (
    REGISTRY,
    Explainer,
    ExplainResult,
    explain,
    get_explainer,
)
from robustlab.explain.extremal import ExtremalPerturbation
from robustlab.explain.fullgrad import FullGrad
from robustlab.explain.gradcam import GradCAM
from robustlab.explain.gradcampp import SmoothGradCAMpp
from robustlab.explain.gradients import InputXGradient, Saliency, SmoothGrad
from robustlab.explain.integrated import IntegratedGradients
from robustlab.explain.moreau import MoreauGrad
from robustlab.explain.occlusion import Occlusion
from robustlab.explain.osa_das import OSADAS
from robustlab.explain.sobol import SobolIndices, sobol_indices
from robustlab.explain.sobol_attribution import SobolAttribution

__all__ = [
    "REGISTRY",
    "ExplainResult",
    "Explainer",
    "ExtremalPerturbation",
    "FullGrad",
    "GradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "MoreauGrad",
    "OSADAS",
    "Occlusion",
    "Saliency",
    "SmoothGrad",
    "SmoothGradCAMpp",
    "SobolAttribution",
    "SobolIndices",
    "explain",
    "get_explainer",
    "sobol_indices",
]

"""Sound bounds on a network's outputs over an input region (IBP, CROWN, CROWN-IBP, alpha-CROWN),
a sound global Lipschitz bound and its certified radii, and certified accuracy."""

from robustlab.bounds.api import METHODS, BoundResult, compute_bounds
from robustlab.bounds.certify import CERTIFY_METHODS, CertifyResult, certify, margin_spec
from robustlab.bounds.graph import BoundGraph, Bounds, build_graph
from robustlab.bounds.ibp import ibp
from robustlab.bounds.lipschitz import GlobalLipschitz, Radii, global_lipschitz, l2_radius

__all__ = [
    "CERTIFY_METHODS",
    "METHODS",
    "BoundGraph",
    "BoundResult",
    "Bounds",
    "CertifyResult",
    "GlobalLipschitz",
    "Radii",
    "build_graph",
    "certify",
    "compute_bounds",
    "global_lipschitz",
    "ibp",
    "l2_radius",
    "margin_spec",
]

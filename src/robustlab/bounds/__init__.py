"""Sound bounds on a network's outputs over an input region (IBP, CROWN, CROWN-IBP, alpha-CROWN),
and certified accuracy."""

from robustlab.bounds.api import METHODS, BoundResult, compute_bounds
from robustlab.bounds.certify import CertifyResult, certify, margin_spec
from robustlab.bounds.graph import BoundGraph, Bounds, build_graph
from robustlab.bounds.ibp import ibp

__all__ = [
    "METHODS",
    "BoundGraph",
    "BoundResult",
    "Bounds",
    "CertifyResult",
    "build_graph",
    "certify",
    "compute_bounds",
    "ibp",
    "margin_spec",
]

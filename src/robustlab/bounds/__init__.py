"""Sound bounds on a network's outputs over an input region, and certified accuracy."""

from robustlab.bounds.certify import METHODS, CertifyResult, certify, margin_spec
from robustlab.bounds.graph import Bounds
from robustlab.bounds.ibp import ibp
from robustlab.threat import Box


def compute_bounds(model, region: Box, method: str = "ibp", C=None) -> Bounds:
    """Sound bounds on ``model`` (or ``C @ model``) over a (batched) box region."""
    from robustlab.bounds.certify import get_method

    lower, upper = region.box()
    return get_method(method)(model, lower, upper, C=C)


__all__ = ["METHODS", "Bounds", "CertifyResult", "certify", "compute_bounds", "ibp", "margin_spec"]

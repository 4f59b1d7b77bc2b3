"""Complete verification: VNN-LIB specifications, falsification, bounds, branch and bound."""

from robustlab.verify.spec import Disjunct, Property, Spec, robustness_spec
from robustlab.verify.verifier import VERDICTS, VerifyResult, verify
from robustlab.verify.vnnlib import read_vnnlib

__all__ = [
    "VERDICTS",
    "Disjunct",
    "Property",
    "Spec",
    "VerifyResult",
    "read_vnnlib",
    "robustness_spec",
    "verify",
]

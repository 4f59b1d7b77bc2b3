"""Complete verification: VNN-LIB specifications, falsification, bounds, branch and bound."""

from robustlab.verify.spec import Disjunct, Property, Spec, robustness_spec
from robustlab.verify.verifier import STRATEGIES, VERDICTS, VerifyResult, verify, verify_spec
from robustlab.verify.vnnlib import read_vnnlib

__all__ = [
    "STRATEGIES",
    "VERDICTS",
    "Disjunct",
    "Property",
    "Spec",
    "VerifyResult",
    "read_vnnlib",
    "robustness_spec",
    "verify",
    "verify_spec",
]

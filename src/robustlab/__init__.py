"""robustlab: attack, certify, explain and harden neural networks, with one report."""

__version__ = "0.1.0"

from robustlab.attacks import PGD, AttackResult, robustness_curve, run_attack  # noqa: E402
from robustlab.bounds import Bounds, CertifyResult, certify, compute_bounds  # noqa: E402
from robustlab.data import Dataset, load_data  # noqa: E402
from robustlab.errors import RobustlabError, UnsupportedOperation  # noqa: E402
from robustlab.model import LoadedModel, load_model  # noqa: E402
from robustlab.threat import Box, LpBall  # noqa: E402

__all__ = [
    "PGD",
    "AttackResult",
    "Bounds",
    "Box",
    "CertifyResult",
    "Dataset",
    "LoadedModel",
    "LpBall",
    "RobustlabError",
    "UnsupportedOperation",
    "__version__",
    "certify",
    "compute_bounds",
    "load_data",
    "load_model",
    "robustness_curve",
    "run_attack",
]

"""robustlab: attack, certify, explain and harden neural networks, with one report.

The public names below are imported on first use (PEP 562 module ``__getattr__``), so that
``import robustlab`` and the command line's ``--help`` do not pay for torch; ``rl.load_model``,
``from robustlab import certify`` and ``dir(robustlab)`` work as with eager imports.
"""

from __future__ import annotations

import importlib
import importlib.util

from robustlab.errors import did_you_mean

__version__ = "0.1.0"

# public name -> the module that defines it (one table; __all__ is derived from it)
_EXPORTS = {
    "APGD": "robustlab.attacks",
    "FGSM": "robustlab.attacks",
    "PGD": "robustlab.attacks",
    "Square": "robustlab.attacks",
    "SuiteResult": "robustlab.attacks",
    "AttackResult": "robustlab.attacks",
    "robustness_curve": "robustlab.attacks",
    "run_attack": "robustlab.attacks",
    "Bounds": "robustlab.bounds",
    "CertifyResult": "robustlab.bounds",
    "certify": "robustlab.bounds",
    "compute_bounds": "robustlab.bounds",
    "Dataset": "robustlab.data",
    "load_data": "robustlab.data",
    "RobustlabError": "robustlab.errors",
    "UnsupportedOperation": "robustlab.errors",
    "LoadedModel": "robustlab.model",
    "load_model": "robustlab.model",
    "Box": "robustlab.threat",
    "LpBall": "robustlab.threat",
    "audit_job": "robustlab.jobs",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:  # a subpackage used as an attribute: rl.attacks.evaluate(...)
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f"{__name__}.{name}")
        hint = did_you_mean(name, __dir__())
        raise AttributeError(f"module 'robustlab' has no attribute '{name}'{hint}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""The application layer: one module per command (``jobs/<command>.py``), each loading its
inputs, calling the capabilities and assembling the report dict; the CLI parses arguments,
calls a job, writes the files and records the run.

The jobs are imported on first use (PEP 562 module ``__getattr__``, as ``robustlab`` does), so
``from robustlab.jobs import prepare`` does not load every capability."""

from __future__ import annotations

import importlib

from robustlab.jobs.common import Progress as Progress
from robustlab.jobs.common import _base as _base
from robustlab.jobs.common import check_eps as check_eps
from robustlab.jobs.common import check_eps_on as check_eps_on
from robustlab.jobs.common import check_fits as check_fits
from robustlab.jobs.common import prepare as prepare
from robustlab.jobs.common import report_head as report_head
from robustlab.jobs.common import versions as versions

# public name -> the module that defines it (one table; __all__ is derived from it)
_EXPORTS = {
    "attack_job": "robustlab.jobs.attack",
    "write_examples": "robustlab.jobs.attack",
    "certify_job": "robustlab.jobs.certify",
    "parse_methods": "robustlab.jobs.certify",
    "metrics_of": "robustlab.jobs.metrics",
    "audit_job": "robustlab.jobs.audit",
    "demo_job": "robustlab.jobs.audit",
    "blindspots_job": "robustlab.jobs.blindspots",
    "prune_job": "robustlab.jobs.compress",
    "patch_job": "robustlab.jobs.compress",
    "conformal_job": "robustlab.jobs.conformal",
    "corrupt_job": "robustlab.jobs.corrupt",
    "detect_job": "robustlab.jobs.detect",
    "explain_job": "robustlab.jobs.explain",
    "proofs_job": "robustlab.jobs.explain",
    "mix_job": "robustlab.jobs.mix",
    "repair_job": "robustlab.jobs.repair",
    "sensitivity_job": "robustlab.jobs.sensitivity",
    "smooth_job": "robustlab.jobs.smooth",
    "train_job": "robustlab.jobs.train",
    "verify_job": "robustlab.jobs.verify",
}

__all__ = sorted(
    [
        *_EXPORTS,
        "Progress",
        "_base",
        "check_eps",
        "check_eps_on",
        "check_fits",
        "prepare",
        "report_head",
        "versions",
    ]
)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'robustlab.jobs' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

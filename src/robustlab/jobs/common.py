"""What every job shares: loading a model and data that fit together, checking eps, and the
head of every report (kind, model, data, settings, versions)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version

import numpy
import torch

from robustlab import __version__
from robustlab.data import Dataset, load_data
from robustlab.inputs import check_fits as check_fits  # re-exported for the jobs
from robustlab.inputs import fit
from robustlab.model import LoadedModel, load_model
from robustlab.threat import LpBall, eps_values, on_data

Progress = Callable[[str], None]


def versions() -> dict:
    return {
        "robustlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "onnx": version("onnx"),  # importing onnx costs ~1 s of start-up
        "python": platform.python_version(),
    }


check_eps = eps_values  # a list of eps values: finite, >= 0, at least one


def check_eps_on(eps: Sequence[float], norm: str, data: Dataset) -> None:
    """Before any work: every eps fits the data's value range (else: suggest eps/255)."""
    for e in eps:
        on_data(LpBall(norm, e), data)


def prepare(model_src, data_src, n: int | None = None, device="cpu") -> tuple[LoadedModel, Dataset]:
    """Load a model and a dataset and check that they fit together (``inputs.fit``: the same
    reshaping and checks as the Python API), both on ``device`` (cpu, cuda or auto)."""
    model = load_model(model_src)
    data = load_data(data_src, model.input_shape).subset(n)
    _, data = fit(model, data, device=device)
    return model, data


def load_beside(model_src, data: Dataset) -> LoadedModel:
    """A second model (a baseline, a surrogate, the robust one) loaded on the data's device."""
    model = load_model(model_src)
    model.module.to(data.x.device)
    return model


def report_head(kind: str, model: LoadedModel, data: Dataset, settings: dict) -> dict:
    """The head of every report: kind, time, model, data, settings and versions."""
    return {
        "kind": kind,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": model.to_dict(),
        "data": {
            "name": data.name,
            "n": len(data),
            "shape": list(data.x.shape[1:]),
            "range": [data.lower, data.upper],
        },
        "settings": settings,
        "versions": versions(),
    }


_base = report_head  # the name the jobs of other branches still use

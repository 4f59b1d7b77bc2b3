"""The jobs behind the CLI commands: load, evaluate, and assemble a report dict.

The CLI only parses arguments, calls these, writes files and records the run.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence

import torch

from robustlab.bounds import certify
from robustlab.data import Dataset, load_data
from robustlab.errors import RobustlabError
from robustlab.model import LoadedModel, load_model
from robustlab.threat import LpBall, parse_norm

Progress = Callable[[str], None]


def versions() -> dict:
    from importlib.metadata import version

    import numpy

    from robustlab import __version__

    return {
        "robustlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "onnx": version("onnx"),  # importing onnx costs ~1 s of start-up
        "python": platform.python_version(),
    }


def check_eps(eps: Sequence[float]) -> list[float]:
    """Validate a list of eps values (finite, >= 0, at least one)."""
    if not eps:
        raise RobustlabError("expected at least one eps value")
    for e in eps:
        LpBall("inf", e)  # raises a RobustlabError naming a bad value
    return [float(e) for e in eps]


def prepare(model_src, data_src, n: int | None = None) -> tuple[LoadedModel, Dataset]:
    """Load a model and a dataset and check that they fit together."""
    model = load_model(model_src)
    data = load_data(data_src, model.input_shape).subset(n)
    if model.input_shape is not None:
        data = data.matched_to(model.input_shape)
    check_fits(model.module, data)
    return model, data


def check_fits(module: torch.nn.Module, data: Dataset, role: str = "model") -> None:
    """Check that ``module`` (the model, a baseline, a surrogate) maps the data's inputs to
    (batch, classes) logits with an output for every label."""
    try:
        with torch.no_grad():
            out = module(data.x[:2])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise RobustlabError(
            f"{role} failed on data '{data.name}' of shape {tuple(data.x.shape[1:])} ({first})"
        ) from None
    if out.dim() != 2:
        raise RobustlabError(
            f"expected the {role} to output (batch, classes); found {tuple(out.shape)}"
        )
    if data.num_classes > out.shape[1]:
        raise RobustlabError(
            f"data '{data.name}' has labels up to {data.num_classes - 1} but the {role} has "
            f"{out.shape[1]} outputs"
        )


def _base(kind: str, model: LoadedModel, data: Dataset, settings: dict) -> dict:
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


def attack_job(
    model_src,
    data_src,
    eps: Sequence[float],
    norm: str = "inf",
    *,
    suite: str = "fast",
    attacks: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    eot: int = 1,
    surrogate=None,
    progress: Progress | None = None,
) -> dict:
    """Robust accuracy under an attack suite (or named attacks) at each eps; keys
    ``clean_accuracy``, ``robust_accuracy`` (first eps), ``curve``, ``per_attack``, ``flags``,
    ``certified_skipped``. ``surrogate``: the model the transfer attack crafts its examples on;
    ``eot``: forward passes per gradient."""
    from robustlab.attacks import evaluate
    from robustlab.attacks.transfer import load_surrogate

    eps, norm = check_eps(eps), parse_norm(norm)
    model, data = prepare(model_src, data_src, n)
    sur, attacks = load_surrogate(surrogate, data, attacks)
    if progress:
        progress(f"{suite if attacks is None else ','.join(attacks)} on {len(data)} examples")
    result = evaluate(
        model.module,
        data,
        eps,
        norm,
        suite=suite,
        attacks=attacks,
        batch_size=batch_size,
        seed=seed,
        eot=eot,
        surrogate=sur.module if sur else None,
        progress=progress,
    )
    settings = {
        "suite": result.suite,
        "attacks": result.attacks,
        "norm": norm,
        "eps": eps,
        "seed": seed,
        "eot": eot,
    }
    if sur:
        settings["surrogate"] = sur.to_dict()
    report = _base("attack", model, data, settings)
    report.update(result.to_dict())
    return report


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Bound methods from ``"ibp,crown"`` or a list; each must be known."""
    from robustlab.bounds import CERTIFY_METHODS as METHODS

    methods = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    for m in methods:
        if m not in METHODS:
            raise RobustlabError(f"unknown bound method '{m}'; known: {', '.join(METHODS)}")
    if not methods:
        raise RobustlabError("expected at least one bound method")
    return methods


def certify_job(
    model_src,
    data_src,
    eps: Sequence[float],
    norm: str = "inf",
    *,
    method: str | Sequence[str] = "ibp",
    n: int | None = None,
    batch_size: int = 256,
    precision: str = "float64",
    progress: Progress | None = None,
) -> dict:
    """Certified accuracy at each eps for one or more bound methods; keys ``clean_accuracy``,
    ``certified_accuracy`` (first eps; a point certified by any of the methods), ``curve``,
    ``per_method``, ``tightness``."""
    from robustlab.bounds.certify import PRECISIONS
    from robustlab.bounds.tightness import tightness

    eps, norm = check_eps(eps), parse_norm(norm)
    methods = parse_methods(method)
    if precision not in PRECISIONS:
        raise RobustlabError(f"precision must be float64 or float32; found '{precision}'")
    model, data = prepare(model_src, data_src, n)
    curve, per_method = [], []
    for e in eps:
        threat = LpBall(norm, e, data.lower, data.upper)
        union = None
        for m in methods:
            if progress:
                progress(f"{m} bounds on {len(data)} examples at eps {e:g}")
            r = certify(model.module, data, threat, m, batch_size=batch_size, precision=precision)
            cert = torch.tensor(r.certified)
            union = cert if union is None else union | cert
            per_method.append({k: v for k, v in r.to_dict().items() if k != "certified"})
        curve.append({"eps": e, "certified_accuracy": float(union.float().mean())})
    clean = per_method[0]["clean_accuracy"]
    tight = None
    if norm == "inf":  # Mao et al.'s tightness is defined for Linf boxes
        sample = data.x[: min(len(data), 64)]
        # the linearised network's ratio does not depend on eps; computed at the first eps > 0
        e0 = next((e for e in eps if e > 0), None)
        tight = None if e0 is None else float(tightness(model.module, sample, e0).mean())
    settings = {"methods": methods, "norm": norm, "eps": eps, "precision": precision}
    report = _base("certify", model, data, settings)
    report.update(
        norm=norm,
        method=methods[0] if len(methods) == 1 else methods,
        clean_accuracy=clean,
        certified_accuracy=curve[0]["certified_accuracy"],
        curve=curve,
        per_method=per_method,
        tightness=tight,
    )
    return report


def metrics_of(report: dict) -> dict:
    """Flat metrics of a report for the run history."""
    m = {"clean_accuracy": report.get("clean_accuracy")}
    for p in report.get("curve", []):
        at = f"{p['eps']:g}" if "eps" in p else f"radius {p.get('radius', 0):g}"  # smoothing: L2
        for key in ("robust_accuracy", "certified_accuracy"):
            if key in p:
                m[f"{key}@{at}"] = p[key]
    for row in report.get("comparison") or []:  # train: one row per method
        for key in ("clean_accuracy", "robust_accuracy", "certified_accuracy", "train_seconds",
                    "robust_l2_accuracy", "certified_l2_accuracy"):  # fmt: skip
            if key in row:
                m[f"{row['method']} {key}"] = row[key]
    for e in report.get("log") or []:  # train: the log per epoch
        for key in ("loss", "clean_accuracy", "robust_accuracy", "certified_accuracy"):
            m[f"{e['method']} {key}@epoch {e['epoch']}"] = e.get(key)
    for key in ("mean_corruption_accuracy", "mce", "relative_mce"):  # corrupt
        if report.get(key) is not None:
            m[key] = report[key]
    head = report.get("headline") or {}  # audit: empirical - certified at the headline eps
    if head.get("gap") is not None:
        m[f"gap@{head['eps']:g}"] = head["gap"]
    for item in report.get("metrics") or []:  # results that list their own metrics (Metric)
        m[item["name"]] = item["value"]
    return m

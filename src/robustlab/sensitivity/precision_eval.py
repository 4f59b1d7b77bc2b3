"""Clean, robust and certified accuracy of a model emulated in lower precision: the whole model in
each format (weights alone, then weights and activations) and one layer at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy.stats import spearmanr
from torch import nn

from robustlab.attacks import evaluate
from robustlab.bounds import certify
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import weight_layers
from robustlab.sensitivity.precision import emulate, get_format, round_weights, weight_error
from robustlab.threat import LpBall

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PrecisionResult:
    """One row per setting: format, scope (``model`` or a layer), whether activations are rounded,
    clean accuracy and loss (and their change from float32), robust and certified accuracy."""

    baseline: dict  # the float32 model's row
    rows: list[dict]
    eps: float | None
    certify_methods: list[str]
    calibration_n: int
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _clean(model: nn.Module, data: Dataset, batch_size: int) -> tuple[float, float]:
    hits, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            x, y = data.x[i : i + batch_size], data.y[i : i + batch_size]
            out = model(x)
            hits += int((out.argmax(1) == y).sum())
            loss += float(nn.functional.cross_entropy(out.double(), y, reduction="sum"))
    return hits / len(data), loss / len(data)


def _certified(model, data, eps, methods, batch_size) -> float | None:

    if eps is None or not methods:
        return None
    threat = LpBall("inf", eps, data.lower, data.upper)
    union = torch.zeros(len(data), dtype=torch.bool)
    try:
        for m in methods:
            r = certify(model, data, threat, m, batch_size=batch_size)
            union |= torch.tensor(r.certified, dtype=torch.bool)
    except RobustlabError:  # an operation the bound engine does not support
        return None
    return float(union.float().mean())


def evaluate_precision(
    model: nn.Module,
    data: Dataset,
    *,
    formats: Sequence[str] = ("float16", "bfloat16", "int8"),
    layer_formats: Sequence[str] = ("int8",),
    eps: float | None = None,
    suite: str = "fast",
    robust_n: int | None = None,
    certify_methods: Sequence[str] = ("ibp", "crown"),
    certify_n: int | None = None,
    calibration: Dataset | None = None,
    calibration_n: int = 64,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
) -> PrecisionResult:
    """Every setting's row. Robust accuracy: the attack ``suite`` at Linf ``eps`` on the first
    ``robust_n`` examples of the emulated model (activations rounded with straight-through
    gradients). Certified accuracy: ``certify_methods`` (any) on the first ``certify_n``
    examples of the weight-rounded model (activations exact). Integer activations are calibrated
    on the first ``calibration_n`` inputs of ``calibration`` (default: ``data``)."""

    start = time.perf_counter()
    for f in (*formats, *layer_formats):
        get_format(f)
    if calibration_n < 1:
        raise RobustlabError(f"calibration_n must be positive; found {calibration_n}")
    calib = (calibration or data).x[:calibration_n]
    rdata, cdata = data.subset(robust_n), data.subset(certify_n)
    methods = list(certify_methods)
    say = progress or (lambda _m: None)

    def robust(m) -> float | None:
        if eps is None:
            return None
        r = evaluate(m, rdata, [eps], "inf", suite=suite, batch_size=batch_size, seed=seed)
        return r.robust_accuracy

    def row(fmt_name, scope, activations, m, certified, err) -> dict:
        acc, loss = _clean(m, data, batch_size)
        return {
            "format": fmt_name,
            "scope": scope,
            "activations": activations,
            "clean_accuracy": acc,
            "clean_drop": base_acc - acc,
            "loss": loss,
            "loss_increase": loss - base_loss,
            "robust_accuracy": robust(m),
            "certified_accuracy": certified,
            "weight_error": err,
        }

    model = model.eval()
    say("precision: the float32 model")
    base_acc, base_loss = _clean(model, data, batch_size)
    baseline = row("float32", "model", False, model, None, 0.0)
    baseline["certified_accuracy"] = _certified(model, cdata, eps, methods, batch_size)
    rows = []
    for name in formats:
        fmt = get_format(name)
        say(f"precision: the whole model in {name}")
        w_only = round_weights(model, fmt)
        cert = _certified(w_only, cdata, eps, methods, batch_size)
        err = sum(weight_error(model, fmt).values())
        rows.append(row(name, "model", False, w_only, cert, err))
        full = emulate(model, fmt, calibration=calib, batch_size=batch_size)
        rows.append(row(name, "model", True, full, cert, err))
    for name in layer_formats:
        fmt = get_format(name)
        for layer, _ in weight_layers(model):
            say(f"precision: layer {layer} in {name}")
            cert = _certified(round_weights(model, fmt, [layer]), cdata, eps, methods, batch_size)
            m = emulate(model, fmt, [layer], calibration=calib, batch_size=batch_size)
            err = weight_error(model, fmt, [layer])[layer]
            rows.append(row(name, layer, True, m, cert, err))
    return PrecisionResult(baseline, rows, eps, methods, len(calib), time.perf_counter() - start)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation, or None when it is undefined (fewer than 3 pairs, or a
    constant sequence)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)

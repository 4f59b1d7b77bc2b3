"""Corruption metrics (Hendrycks & Dietterich 2019, arXiv:1903.12261): accuracy per corruption and
severity, mean corruption accuracy, corruption error (CE) and mCE against a baseline model, and
relative mCE.

With error ``E[c, s]`` of the model and ``B[c, s]`` of the baseline at corruption ``c``, severity
``s``, and clean errors ``E0``, ``B0``: ``CE_c = sum_s E / sum_s B``,
``relative CE_c = sum_s (E - E0) / sum_s (B - B0)``; mCE and relative mCE average them over the
common corruptions evaluated (over all evaluated when none of them is common). Without a baseline
the unnormalised mean error ``1 - mean corruption accuracy`` is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.corruptions.base import (
    CORRUPTIONS,
    check_images,
    corrupt,
    corruption_names,
    parse_severities,
    stable_seed,
)
from robustlab.corruptions.tabular import corrupt_tabular, tabular_names
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.inputs import fit
from robustlab.results import Metric
from robustlab.shards import Backend, run_shards

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CorruptionResult:
    """Accuracy per corruption and severity with the summary metrics and their cost."""

    clean_accuracy: float
    table: tuple[dict, ...]  # {corruption, severity, accuracy}
    per_corruption: tuple[dict, ...]  # {corruption, family, common, accuracy, ce, relative_ce}
    mean_corruption_accuracy: float
    mean_corruption_error: float  # unnormalised: 1 - mean corruption accuracy
    mce: float | None
    relative_mce: float | None
    baseline: dict | None  # {clean_accuracy, table}
    seed: int
    forward_passes: int
    corruption_seconds: float
    seconds: float

    def to_dict(self) -> dict:
        return {
            "clean_accuracy": self.clean_accuracy,
            "table": list(self.table),
            "per_corruption": list(self.per_corruption),
            "mean_corruption_accuracy": self.mean_corruption_accuracy,
            "mean_corruption_error": self.mean_corruption_error,
            "mce": self.mce,
            "relative_mce": self.relative_mce,
            "baseline": self.baseline,
            "seed": self.seed,
            "forward_passes": self.forward_passes,
            "corruption_seconds": self.corruption_seconds,
            "seconds": self.seconds,
        }

    def metrics(self) -> list[Metric]:
        """Clean and mean corruption accuracy; mCE and relative mCE (lower is better) when a
        baseline gave them."""
        out = [Metric("clean_accuracy", self.clean_accuracy, True),
               Metric("mean_corruption_accuracy", self.mean_corruption_accuracy, True),
               Metric("mce", self.mce, False), Metric("relative_mce", self.relative_mce, False)]  # fmt: skip
        return [m for m in out if m.value is not None]


def to_unit(data: Dataset) -> Tensor:
    """The dataset's images mapped from [lower, upper] to [0, 1]."""
    return to_unit_x(data.x, data)


def to_unit_x(x: Tensor, data: Dataset) -> Tensor:
    return ((x - data.lower) / (data.upper - data.lower)).clamp(0, 1)


def from_unit(x: Tensor, data: Dataset) -> Tensor:
    return data.lower + x * (data.upper - data.lower)


def _correct(models: Sequence[nn.Module], x: Tensor, y: Tensor) -> list[int]:
    with torch.no_grad():
        return [int((m(x).argmax(1) == y).sum()) for m in models]


def ce_metrics(
    errors: dict[str, list[float]],
    base_errors: dict[str, list[float]] | None,
    clean_error: float,
    base_clean_error: float | None,
) -> dict[str, tuple[float | None, float | None]]:
    """CE and relative CE per corruption from per-severity errors (lists in the same order)."""
    out = {}
    for name, err in errors.items():
        if base_errors is None:
            out[name] = (None, None)
            continue
        base = base_errors[name]
        ce = sum(err) / sum(base) if sum(base) > 0 else None
        gap = sum(b - base_clean_error for b in base)
        rel = sum(e - clean_error for e in err) / gap if gap > 0 else None
        out[name] = (ce, rel)
    return out


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals and len(vals) == len(values) else None


def evaluate_corruptions(
    model: nn.Module,
    data: Dataset,
    corruptions: str | Sequence[str] = "all",
    severities: str | Sequence[int] = "1-5",
    *,
    baseline: nn.Module | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
    backend: Backend = Backend(),
) -> CorruptionResult:
    """Accuracy of ``model`` (and of ``baseline`` on the same corrupted inputs) under each
    corruption at each severity; the corruption of every batch is seeded by ``seed``, the
    corruption name, the severity and the batch index, so results do not depend on the order.
    Images (N, C, H, W) take the image corruptions, rows (N, F) the tabular ones. ``backend``
    dask: each corruption one Dask task (``robustlab.shards``), the same numbers as here."""
    start = time.perf_counter()
    model, data = fit(model, data, device=device)  # load_model's, a module or a path
    if baseline is not None:
        baseline, _ = fit(baseline, data, "baseline model", device)
    sevs = parse_severities(severities)
    if batch_size < 1:
        raise RobustlabError(f"batch size must be positive; found {batch_size}")
    tabular = data.x.dim() == 2
    if tabular:
        names = tabular_names(corruptions)
        stats = {"scale": data.x.std(0), "fill": data.x.mean(0)}
        stats.update(lower=data.lower, upper=data.upper)

        def apply(xb: Tensor, name: str, s: int, sd: int) -> Tensor:
            return corrupt_tabular(xb, name, s, sd, **stats)
    else:
        names = corruption_names(corruptions)
        check_images(data.x)

        def apply(xb: Tensor, name: str, s: int, sd: int) -> Tensor:
            return corrupt(xb, name, s, sd, lower=data.lower, upper=data.upper)

    models = [model] if baseline is None else [model, baseline]
    n = len(data)
    if backend.name == "dask" and len(names) > 1:  # one task per corruption (seeds per batch)
        tasks = [(data, nm, sevs, batch_size, seed) for nm in names]
        parts = run_shards(_one_corruption, tasks, backend, shared=(model, baseline))
        rows = [r for p in parts for r in p.table]
        base_rows = [r for p in parts for r in p.baseline["table"]] if baseline is not None else []
        clean_acc = parts[0].clean_accuracy
        base_clean = parts[0].baseline["clean_accuracy"] if baseline is not None else None
        passes = sum(p.forward_passes for p in parts) - (len(parts) - 1) * len(models) * n
        corrupt_seconds = sum(p.corruption_seconds for p in parts)
    else:
        clean, rows, base_rows, passes, corrupt_seconds = _count(
            models, data, names, sevs, apply, batch_size, seed, progress
        )
        clean_acc = clean[0] / n
        base_clean = clean[1] / n if baseline is not None else None
    errors = {nm: [1 - r["accuracy"] for r in rows if r["corruption"] == nm] for nm in names}
    base_errors = None
    if baseline is not None:
        base_errors = {
            nm: [1 - r["accuracy"] for r in base_rows if r["corruption"] == nm] for nm in names
        }
    ces = ce_metrics(
        errors, base_errors, 1 - clean_acc, None if base_clean is None else 1 - base_clean
    )
    per = []
    for nm in names:
        spec = None if tabular else CORRUPTIONS[nm]
        per.append(
            {
                "corruption": nm,
                "family": "tabular" if spec is None else spec.family,
                "common": True if spec is None else spec.common,
                "accuracy": 1 - sum(errors[nm]) / len(errors[nm]),
                "ce": ces[nm][0],
                "relative_ce": ces[nm][1],
            }
        )
    summary = [p for p in per if p["common"]] or per
    mca = sum(p["accuracy"] for p in summary) / len(summary)
    return CorruptionResult(
        clean_accuracy=clean_acc,
        table=tuple(rows),
        per_corruption=tuple(per),
        mean_corruption_accuracy=mca,
        mean_corruption_error=1 - mca,
        mce=_mean([p["ce"] for p in summary]) if baseline is not None else None,
        relative_mce=_mean([p["relative_ce"] for p in summary]) if baseline is not None else None,
        baseline=None if baseline is None else {"clean_accuracy": base_clean, "table": base_rows},
        seed=seed,
        forward_passes=passes,
        corruption_seconds=corrupt_seconds,
        seconds=time.perf_counter() - start,
    )


def _count(models, data, names, sevs, apply, batch_size, seed, progress):
    """Correct predictions clean and per corruption and severity, for each model."""
    y, n = data.y, len(data)
    clean = [0] * len(models)
    for i in range(0, n, batch_size):
        for k, c in enumerate(_correct(models, data.x[i : i + batch_size], y[i : i + batch_size])):
            clean[k] += c
    passes = len(models) * n
    rows, base_rows = [], []
    corrupt_seconds = 0.0
    for name in names:
        if progress:
            progress(f"{name} at severities {','.join(map(str, sevs))} on {n} examples")
        for s in sevs:
            correct = [0] * len(models)
            for b, i in enumerate(range(0, n, batch_size)):
                t0 = time.perf_counter()
                xc = apply(data.x[i : i + batch_size], name, s, stable_seed(seed, name, s, b))
                corrupt_seconds += time.perf_counter() - t0
                got = _correct(models, xc, y[i : i + batch_size])
                correct = [a + g for a, g in zip(correct, got, strict=True)]
            passes += len(models) * n
            rows.append({"corruption": name, "severity": s, "accuracy": correct[0] / n})
            if len(models) > 1:
                base_rows.append({"corruption": name, "severity": s, "accuracy": correct[1] / n})
    return clean, rows, base_rows, passes, corrupt_seconds


def _one_corruption(model, baseline, task) -> CorruptionResult:
    """One corruption at every severity (a Dask task of ``evaluate_corruptions``)."""
    data, name, sevs, batch_size, seed = task
    return evaluate_corruptions(
        model, data, [name], sevs, baseline=baseline, batch_size=batch_size, seed=seed
    )

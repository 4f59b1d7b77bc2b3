"""What every result type shares: its metrics, each declared with its direction (as Quantus
declares ``higher_is_better``), so the run history, ``runs compare`` and the report can sort and
colour them without knowing the result's kind.

A result type describes itself: ``to_dict()`` (its part of ``report.json``) and ``metrics()``
(a list of ``Metric``); the jobs write ``metrics`` into the report (``report_metrics``), the run
history and the HTML page read them from there (``flat_metrics``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

SCHEMA_VERSION = 2  # of report.json: written into every report (2: smoothing's n, samples)


def upgrade(report: dict) -> dict:
    """A report.json of an older schema in today's words. Schema 1: smoothing's ``n`` was the
    Monte-Carlo draws and ``samples`` the per-input records (now ``samples`` and ``per_input``,
    ``n`` the examples, as everywhere); the audit's smoothing section counted its examples in
    ``examples``."""
    if report.get("schema_version", 1) >= 2:
        return report
    report = dict(report)
    if report.get("kind") == "smooth":
        report.update(_smoothing_v2(report))
    if isinstance(report.get("smoothing"), dict):  # the audit's section
        report["smoothing"] = _smoothing_v2(report["smoothing"])
    report["schema_version"] = SCHEMA_VERSION
    return report


def _smoothing_v2(part: dict) -> dict:
    part = dict(part)
    if isinstance(part.get("samples"), list):
        part["per_input"] = part.pop("samples")
        part["samples"] = part.pop("n", None)
        part["n"] = part.pop("examples", len(part["per_input"]))
    return part


@dataclass(frozen=True)
class Metric:
    """One number a result reports, with its direction."""

    name: str
    value: float | None
    higher_is_better: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "higher_is_better": self.higher_is_better}


def float32_rate(count: int, n: int) -> float:
    """``count / n`` as the mean of ``n`` float32 zeros and ones gives it (the accuracies every
    capability computes with ``tensor.float().mean()``), so merged shards report the same number."""
    return float(np.float32(count) / np.float32(n)) if n else float("nan")


def metric_dicts(metrics: Iterable[Metric], *, keep_missing: bool = False) -> list[dict]:
    """The metrics as JSON-ready dicts; those without a value are left out unless
    ``keep_missing`` (then recorded as null: a stage that failed, an epoch not evaluated)."""
    return [m.to_dict() for m in metrics if keep_missing or m.value is not None]


class Result(Protocol):
    """What a result type provides: its report part and its metrics."""

    def to_dict(self) -> dict: ...

    def metrics(self) -> list[Metric]: ...


def curve_metrics(
    curve: Iterable[dict], keys: Sequence[str] = ("robust_accuracy", "certified_accuracy")
) -> list[Metric]:
    """``key@eps`` for each point of an accuracy curve and each of ``keys`` it has (over the
    certified L2 radius of smoothing: ``key@radius r``); higher is better."""
    out = []
    for p in curve:
        at = f"{p['eps']:g}" if "eps" in p else f"radius {p.get('radius', 0):g}"
        out += [Metric(f"{key}@{at}", p[key], True) for key in keys if key in p]
    return out


def flat_metrics(report: dict) -> dict:
    """A report's metrics as ``{name: value}`` (``clean_accuracy`` first, null when absent): what
    the run history records."""
    out = {"clean_accuracy": report.get("clean_accuracy")}
    for item in report.get("metrics") or []:
        out[item["name"]] = item["value"]
    return out

"""The flat metrics of a report, for the run history and ``runs compare``: each result type
lists its own (``Result.metrics``), the jobs write them into the report as ``metrics``."""

from __future__ import annotations

from robustlab.results import flat_metrics


def metrics_of(report: dict) -> dict:
    """Flat metrics of a report for the run history (``name: value``)."""
    return flat_metrics(report)

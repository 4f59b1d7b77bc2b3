"""The flat metrics of a report, for the run history and ``runs compare``."""

from __future__ import annotations


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
    for item in report.get("metrics") or []:  # results that name their own metrics
        m[item["name"]] = item["value"]
    head = report.get("headline") or {}  # audit: empirical - certified at the headline eps
    if head.get("gap") is not None:
        m[f"gap@{head['eps']:g}"] = head["gap"]
    for item in report.get("metrics") or []:  # results that list their own metrics (Metric)
        m[item["name"]] = item["value"]
    return m

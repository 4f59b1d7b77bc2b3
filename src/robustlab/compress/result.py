"""The results of ``prune`` and ``patch``: frozen dataclasses that list their own metrics."""

from __future__ import annotations

from dataclasses import dataclass

from robustlab.results import Metric, metric_dicts

KEYS = ("clean_accuracy", "robust_accuracy", "certified_accuracy")


@dataclass(frozen=True)
class PruneResult:
    """Robustness against sparsity: the dense model and one row per (method, sparsity)."""

    eps: float
    structure: str
    dense: dict  # clean / robust / certified accuracy of the dense model
    rows: list[dict]  # method, objective, target_sparsity, sparsity, accuracies, seconds, onnx
    seconds: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "metrics": metric_dicts(self.metrics())}

    def metrics(self) -> list[Metric]:
        m = [Metric(f"dense {k}", self.dense.get(k), True) for k in KEYS]
        for r in self.rows:
            at = f"{r['method']} {r['target_sparsity']:g}"
            m += [Metric(f"{at} {k}", r.get(k), True) for k in KEYS]
            m.append(Metric(f"{at} train_seconds", r.get("train_seconds"), False))
        return m


@dataclass(frozen=True)
class PatchResult:
    """A robust weight signature applied with growing scale: one row per scale."""

    eps: float
    layers: list[str]  # the patched layers
    difference: list[dict]  # per layer: relative distance between the robust and standard weights
    standard: dict  # accuracies of the standard model, the robust model and the target
    robust: dict
    target: dict
    rows: list[dict]  # scale, accuracies
    seconds: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "metrics": metric_dicts(self.metrics())}

    def metrics(self) -> list[Metric]:
        m = [Metric(f"robust model {k}", self.robust.get(k), True) for k in KEYS]
        for r in self.rows:
            m += [Metric(f"{k}@scale {r['scale']:g}", r.get(k), True) for k in KEYS]
        return m

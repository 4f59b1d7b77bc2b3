"""What every result type shares: its metrics, each declared with its direction (as Quantus
declares ``higher_is_better``), so the run history, ``runs compare`` and the report can sort and
colour them without knowing the result's kind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SCHEMA_VERSION = 1  # of report.json: written into every report


@dataclass(frozen=True)
class Metric:
    """One number a result reports, with its direction."""

    name: str
    value: float | None
    higher_is_better: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "higher_is_better": self.higher_is_better}


def metric_dicts(metrics: Iterable[Metric]) -> list[dict]:
    """The metrics as JSON-ready dicts, those without a value left out."""
    return [m.to_dict() for m in metrics if m.value is not None]

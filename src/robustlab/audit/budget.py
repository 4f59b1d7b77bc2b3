"""The audit's time budget: a clock for the whole run and a deadline per stage."""

from __future__ import annotations

import time
from dataclasses import dataclass

RESERVE = 4.0  # seconds kept for writing the report and drawing its figures
GRACE = 0.25  # a stage may overrun its share by this fraction before it is stopped


class BudgetExceeded(Exception):
    """Raised (from a progress callback) when a stage runs past its hard deadline."""


@dataclass
class Clock:
    """Seconds since the audit started, against a total budget."""

    budget: float
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = self.start or time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left for stages (the report's reserve excluded)."""
        return self.budget - RESERVE - self.elapsed()

    def share(self, weight: float, later: float) -> Deadline:
        """A deadline for a stage of ``weight`` with ``later`` total weight still to come."""
        seconds = max(0.0, self.left()) * weight / max(weight + later, 1e-9)
        now = time.perf_counter()
        hard = min(now + seconds * (1 + GRACE) + 1.0, self.start + self.budget - RESERVE / 2)
        return Deadline(now, now + seconds, max(hard, now))


@dataclass(frozen=True)
class Deadline:
    """A stage's time: plan to finish by ``soft``; stopped at ``hard``."""

    start: float
    soft: float
    hard: float

    @property
    def seconds(self) -> float:
        return self.soft - self.start

    def left(self) -> float:
        return self.soft - time.perf_counter()

    def fits(self, estimate: float) -> bool:
        """Whether work estimated at ``estimate`` seconds ends before the soft deadline."""
        return estimate <= self.left()

    def check(self) -> None:
        """Raise ``BudgetExceeded`` past the hard deadline."""
        if time.perf_counter() > self.hard:
            raise BudgetExceeded(f"stage stopped after its time budget of {self.seconds:.1f} s")

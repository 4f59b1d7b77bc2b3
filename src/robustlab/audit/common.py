"""Small helpers the audit stages share: confidence intervals, chunk planning, predictions."""

from __future__ import annotations

import time
from collections.abc import Iterator

from scipy.stats import binomtest
from torch import Tensor

from robustlab.audit.budget import Deadline


def proportion_ci(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Clopper-Pearson interval of a proportion ``k / n`` (scipy.stats.binomtest)."""
    if n <= 0:
        return None

    ci = binomtest(int(k), int(n)).proportion_ci(level, method="exact")
    return [float(ci.low), float(ci.high)]


def rate(mask: Tensor) -> float | None:
    """The fraction of True in a boolean vector (None when empty)."""
    return float(mask.float().mean()) if len(mask) else None


class Chunks:
    """Work over ``n`` items in chunks sized to end by a stage's soft deadline: the first chunk
    is small (``first``); the rest are sized from the measured time per item."""

    def __init__(self, n: int, deadline: Deadline, *, first: int = 32, most: int = 512) -> None:
        self.n, self.deadline, self.first, self.most = n, deadline, first, most
        self.done = 0
        self.seconds = 0.0
        self.overhead = 0.0  # one-off work inside the chunks (checks): not per item
        self.stopped = False

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while self.done < self.n:
            size = self._size()
            if size == 0:
                self.stopped = True
                return
            a, b = self.done, min(self.n, self.done + size)
            t0 = time.perf_counter()
            yield a, b
            self.seconds += time.perf_counter() - t0
            self.done = b

    def _size(self) -> int:
        left = self.n - self.done
        if self.done == 0:
            return min(left, self.first)
        per_item = max(self.seconds - self.overhead, 0.0) / self.done
        fit = int(self.deadline.left() / max(per_item, 1e-6))
        return max(0, min(left, fit, self.most))

"""Deadlines that long computations check cooperatively.

``with within(t): ...`` sets a deadline (``time.monotonic()`` seconds) for the block, on this
thread; ``check()`` raises :class:`DeadlineExceeded` once it has passed. Bound passes check between
nodes and optimisation loops between iterations, so a verifier given a timeout answers within it
even when a single pass on a huge network would take longer. Outside a block ``check()`` costs one
attribute lookup and never raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_STATE = threading.local()


class DeadlineExceeded(Exception):
    """The time given to the enclosing computation has run out."""


@contextmanager
def within(deadline: float | None) -> Iterator[None]:
    """Run the block under ``deadline`` (nested blocks keep the earlier of the two)."""
    before = getattr(_STATE, "deadline", None)
    if deadline is not None and before is not None:
        deadline = min(deadline, before)
    _STATE.deadline = deadline if deadline is not None else before
    try:
        yield
    finally:
        _STATE.deadline = before


def current() -> float | None:
    """The deadline in force on this thread, if any."""
    return getattr(_STATE, "deadline", None)


def check() -> None:
    """Raise :class:`DeadlineExceeded` when the deadline in force has passed."""
    t = getattr(_STATE, "deadline", None)
    if t is not None and time.monotonic() > t:
        raise DeadlineExceeded


def remaining() -> float:
    """Seconds left before the deadline in force (infinite without one)."""
    t = getattr(_STATE, "deadline", None)
    return float("inf") if t is None else t - time.monotonic()

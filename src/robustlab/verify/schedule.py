"""How searches take turns: a portfolio of generators, each stepped while it is furthest below
its share of the time (with a side turn, e.g. a falsifier's share), and a depth-first stack of
domain batches."""

from __future__ import annotations

import time

from torch import Tensor


def pop_domains(stack: list, batch: int):
    """Up to ``batch`` domains from the top of a stack of domain batches (depth first: few open
    domains); a batch type has ``len``, ``take(index)`` and ``cat(batches)``."""
    parts, need = [], batch
    while stack and need:
        top = stack[-1]
        if len(top) <= need:
            parts.append(stack.pop())
        else:
            parts.append(top.take(slice(len(top) - need, None)))
            stack[-1] = top.take(slice(0, len(top) - need))
        need -= len(parts[-1])
    return parts[0] if len(parts) == 1 else type(parts[0]).cat(parts)


def portfolio(
    searches: list, deadline: float, shares: list[float] | None = None, side=None
) -> tuple[str, Tensor | None]:
    """Run several searches (generators from :func:`bab.search_steps`) with the given shares of time
    (equal by default; the one furthest below its share takes the next step) until one answers
    or the deadline passes. ``side(spent, now, deadline)``, called before every step with the
    searches' summed time: ``(ran, answer)``, where ``ran`` means it took a turn of its own
    instead (e.g. a falsifier's share: ``falsify.Falsifier.beside``) and ``answer`` ends the run
    when not None."""
    shares = shares or [1.0] * len(searches)
    used = [0.0] * len(searches)
    while searches:
        now = time.monotonic()
        if now > deadline:
            return "timeout", None
        if side is not None:
            ran, answer = side(sum(used), now, deadline)
            if answer is not None:
                return answer
            if ran:
                continue
        k = min(range(len(searches)), key=lambda i: used[i] / shares[i])
        try:
            next(searches[k])
        except StopIteration as stop:
            return stop.value
        used[k] += time.monotonic() - now
    return "timeout", None

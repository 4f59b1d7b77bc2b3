"""How searches take turns: a portfolio of generators, each stepped while it is furthest below
its share of the time (with a side turn, e.g. a falsifier's share), and a depth-first stack of
domain batches."""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Pace:
    """When a search counts as stalled: past ``min_s`` seconds of its own, its open volume (the
    value its steps yield) is above ``ratio`` times what it was at half its time so far, and
    that was below ``opened`` (a plateau after progress: the look-ahead spends its first
    seconds near 100% open on ACAS Xu's prop_1, and wins). A stalled search runs at
    ``stalled`` times its share until it gains again. ACAS Xu 4_2 / prop_2: the one-input
    searches sat at 2.7-2.9% open from their 4th second on while the look-ahead halved its
    open volume every 3 s."""

    min_s: float = 1.0
    ratio: float = 0.5
    stalled: float = 0.125
    opened: float = 0.5

    def factor(self, history: list, used: float) -> float:
        """The share's factor for a search with ``history`` ((its seconds, open volume) at each
        step, in order) and ``used`` seconds."""
        if used < self.min_s or len(history) < 2:
            return 1.0
        half = bisect.bisect_right(history, used / 2, key=lambda h: h[0]) - 1
        if half < 0 or history[half][1] >= self.opened:
            return 1.0
        return 1.0 if history[-1][1] <= self.ratio * history[half][1] else self.stalled


PACE = Pace()


def portfolio(
    searches: list,
    deadline: float,
    shares: list[float] | None = None,
    side=None,
    pace: Pace | None = PACE,
) -> tuple[str, Tensor | None]:
    """Run several searches (generators from :func:`bab.search_steps`) with the given shares of time
    (equal by default; the one furthest below its share takes the next step) until one answers
    or the deadline passes. ``side(spent, now, deadline)``, called before every step with the
    searches' summed time: ``(ran, answer)``, where ``ran`` means it took a turn of its own
    instead (e.g. a falsifier's share: ``falsify.Falsifier.beside``) and ``answer`` ends the run
    when not None. ``pace``: a search whose steps yield its open volume runs at a fraction of
    its share while it stalls (:class:`Pace`; None: fixed shares)."""
    shares = shares or [1.0] * len(searches)
    used = [0.0] * len(searches)
    history: list[list] = [[] for _ in searches]  # per search: (seconds, open volume)
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
        weight = shares
        if pace is not None and len(searches) > 1:
            weight = [s * pace.factor(h, u) for s, h, u in zip(shares, history, used, strict=True)]
        k = min(range(len(searches)), key=lambda i: used[i] / weight[i])
        try:
            volume = next(searches[k])
        except StopIteration as stop:
            return stop.value
        if volume is not None:
            history[k].append((used[k], volume))
        used[k] += time.monotonic() - now
    return "timeout", None

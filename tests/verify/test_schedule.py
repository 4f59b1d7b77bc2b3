"""How searches take turns (schedule.py): shares of time kept, and a search whose open volume
stalls runs at a fraction of its share until it gains again."""

from __future__ import annotations

import pytest

from robustlab.verify import schedule
from robustlab.verify.schedule import Pace, pop_domains, portfolio


class _Clock:
    """A clock that only the stand-in searches move (timings mean the same on every machine)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(schedule, "time", c)
    return c


class _Search:
    """A stand-in for a search: steps of ``dt`` seconds on ``clock``, yielding ``volume(step)``
    before each (None: it tells nothing), holding after ``n`` steps."""

    def __init__(self, clock: _Clock, n: int, dt: float, volume) -> None:
        self.clock, self.n, self.dt, self.volume, self.k = clock, n, dt, volume, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.k == self.n:
            raise StopIteration(("holds", self.k))
        v = self.volume(self.k)
        self.k += 1
        self.clock.now += self.dt
        return v


def test_pace_marks_a_search_stalled_only_past_its_first_seconds():
    pace = Pace(min_s=1.0, ratio=0.5, stalled=0.125)
    flat = [(0.0, 1.0), (0.5, 0.1), (1.0, 0.09), (2.0, 0.09)]
    assert pace.factor(flat, 0.9) == 1.0  # too early to tell
    assert pace.factor(flat[:1], 3.0) == 1.0  # one point: nothing to compare
    assert pace.factor(flat, 2.5) == 0.125  # 0.09 against 0.09 at 1.0 s: stalled
    gaining = flat + [(3.0, 0.04)]
    assert pace.factor(gaining, 3.5) == 1.0  # 0.04 against 0.09 at 1.75 s: halved
    unopened = [(0.0, 1.0), (1.0, 0.9), (2.0, 0.8)]
    assert pace.factor(unopened, 2.5) == 1.0  # no plateau before it ever opened the box


def test_a_stalled_search_gives_its_time_to_one_that_gains(clock):
    """Equal shares; the first search's volume stays at 0.25, the second halves every 10 steps
    and answers after 200: with the pace the first runs at 1/8 of its share once stalled,
    without it at its share."""
    for pace in (Pace(min_s=0.05), None):
        stuck = _Search(clock, 10_000, 0.002, lambda k: 0.25)
        gains = _Search(clock, 200, 0.002, lambda k: 0.5 ** (k // 10))
        assert portfolio([stuck, gains], clock.now + 30, pace=pace) == ("holds", 200)
        if pace is None:
            assert abs(stuck.k - gains.k) <= 1
        else:  # 25 steps (0.05 s) at the full share, then 1 in 8
            assert 25 < stuck.k <= 25 + (200 - 25) / 8 + 2


def test_searches_that_tell_no_volume_keep_their_shares(clock):
    a = _Search(clock, 10_000, 0.001, lambda k: None)
    b = _Search(clock, 90, 0.001, lambda k: None)
    assert portfolio([a, b], clock.now + 30, [1.0, 3.0]) == ("holds", 90)
    assert abs(a.k - 30) <= 1
    c = _Search(clock, 10_000, 0.001, lambda k: 0.5)
    assert portfolio([c], clock.now + 1, pace=Pace(min_s=0.0)) == ("timeout", None)


class _Batch(list):
    def take(self, index):
        return _Batch(self[index])

    @classmethod
    def cat(cls, parts):
        return cls([x for p in parts for x in p])


def test_pop_domains_takes_from_the_top_of_the_stack():
    stack = [_Batch([1, 2, 3]), _Batch([4, 5])]
    assert pop_domains(stack, 3) == [4, 5, 3] and stack == [[1, 2]]

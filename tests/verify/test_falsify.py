import time

import pytest
import torch
from torch import nn

from robustlab.verify import branch_regions
from robustlab.verify.falsify import Falsifier, in_box32, sample_search
from robustlab.verify.spec import Disjunct, Property, Spec

from ..conftest import SHARED

ACAS = SHARED / "benchmarks" / "acasxu"


class _Bump(nn.Module):
    """y_0 = ||x - c||_1 (as ReLUs), y_1 = 0.05: y_0 <= r only in an L1 ball of radius r."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        n = len(c)
        self.lin = nn.Linear(n, 2 * n)
        self.lin.weight.data = torch.cat([torch.eye(n), -torch.eye(n)])
        self.lin.bias.data = torch.cat([-c, c])

    def forward(self, x):
        y0 = torch.relu(self.lin(x)).sum(1, keepdim=True)
        return torch.cat([y0, torch.full_like(y0, 0.05)], 1)


def _spec(lower, upper, disjuncts) -> Spec:
    props = [
        Property(lo.double(), hi.double(), tuple(disjuncts))
        for lo, hi in zip(lower, upper, strict=True)
    ]
    return Spec.from_properties(props, len(lower[0]), 2)


def _row(a: float, b: float, d: float) -> Disjunct:
    return Disjunct(torch.tensor([[a, b]], dtype=torch.float64), torch.tensor([d]).double())


def _first(steps, seconds: float = 10.0):
    stop = time.monotonic() + seconds
    for item in steps:
        if item is not None or time.monotonic() > stop:
            return item
    return None


@pytest.mark.parametrize("centre", [[0.3, 0.7, 0.55, 0.2], [0.3, 1.0, 0.0, 0.45]])
def test_the_sample_search_finds_a_planted_counterexample_in_a_tiny_region(centre):
    c = torch.tensor(centre)
    model = _Bump(c)
    # y_0 <= 0.01: an L1 ball of radius 0.01 in the unit 4-cube, about 1e-8 of its volume
    spec = _spec([torch.zeros(4)], [torch.ones(4)], [_row(1.0, 0.0, 0.01)])
    found = _first(sample_search(model, spec, torch.tensor([0]), (4,), seed=0))
    assert found is not None
    r, x = found
    assert r == 0 and x.dtype == torch.float32
    assert in_box32(x, spec.lower[0], spec.upper[0])
    with torch.no_grad():
        y = model(x[None]).double()
    assert float(spec.property(0).violation(y)) <= 0
    assert float((x - c).abs().sum()) <= 0.01 + 1e-6


def test_the_sample_search_never_yields_a_point_that_does_not_violate():
    model = _Bump(torch.tensor([0.5, 0.5, 0.5]))
    # y_0 >= 0 everywhere, so y_0 <= -1e-4 (or y_1 <= 0.04) is never reached
    spec = _spec([torch.zeros(3)], [torch.ones(3)], [_row(1.0, 0.0, -1e-4), _row(0.0, 1.0, 0.04)])
    progress: dict = {}
    steps = sample_search(model, spec, torch.tensor([0]), (3,), samples=1024, progress=progress)
    for _ in range(100):  # about 2 s: a whole round and more
        assert next(steps) is None
    assert progress["rounds"] >= 1 and progress["points"] > 1024


def test_the_sample_search_tells_the_region_and_the_disjunct_apart():
    model = _Bump(torch.tensor([0.8, 0.1, 0.6]))
    # region 0 never reaches either disjunct; region 1 holds the ball (only the second disjunct
    # is reachable there: y_1 = 0.05 is never <= 0.04)
    lows = [torch.tensor([0.0, 0.5, 0.0]), torch.tensor([0.5, 0.0, 0.5])]
    highs = [torch.tensor([0.5, 1.0, 0.5]), torch.tensor([1.0, 0.5, 1.0])]
    spec = _spec(lows, highs, [_row(0.0, 1.0, 0.04), _row(1.0, 0.0, 0.005)])
    found = _first(sample_search(model, spec, torch.tensor([0, 1]), (3,), seed=1))
    assert found is not None
    r, x = found
    assert r == 1 and in_box32(x, spec.lower[1], spec.upper[1])
    with torch.no_grad():
        assert float(spec.property(1).violation(model(x[None]).double())) <= 0


def test_the_falsifier_keeps_its_time_and_rejects_unconfirmed_candidates():
    model = _Bump(torch.tensor([0.3, 0.3]))
    spec = _spec([torch.zeros(2)], [torch.ones(2)], [_row(1.0, 0.0, 0.05)])
    stats: dict = {}
    progress: dict = {}
    steps = sample_search(model, spec, torch.tensor([0]), (2,), progress=progress)
    fals = Falsifier(steps, lambda r, x: None, progress, stats)  # an oracle that disagrees
    t0 = time.monotonic()
    assert fals.run(0.3) is None
    took = time.monotonic() - t0
    assert took < 0.3 + 0.25  # one step (about step_s) past the slice at most, under load
    assert stats["rejected_candidates"] >= 1
    assert stats["search_s"] == pytest.approx(fals.used, abs=1e-3)
    ok = Falsifier(
        sample_search(model, spec, torch.tensor([0]), (2,)), lambda r, x: {"x": x}, {}, {}
    )
    assert ok.run(5.0) is not None


class _Busy:
    """A stand-in for a branch and bound search: ``n`` steps of ``dt`` seconds, then holds."""

    def __init__(self, n: int, dt: float) -> None:
        self.n, self.dt = n, dt

    def __iter__(self):
        return self

    def __next__(self):
        if self.n == 0:
            raise StopIteration(("holds", None))
        self.n -= 1
        end = time.monotonic() + self.dt
        while time.monotonic() < end:
            pass


def test_the_search_beside_branch_and_bound_keeps_to_its_share():
    model = _Bump(torch.tensor([0.5, 0.5, 0.5]))
    spec = _spec([torch.zeros(3)], [torch.ones(3)], [_row(1.0, 0.0, -1.0)])  # never reached
    progress: dict = {}
    steps = sample_search(model, spec, torch.tensor([0]), (3,), progress=progress)
    fals = Falsifier(steps, lambda r, x: None, progress, {}, rate=(0.5, 0.1))
    assert fals.share() == 0.1  # nothing sampled yet: not near
    t0 = time.monotonic()
    verdict = fals.beside([_Busy(40, 0.01), _Busy(40, 0.01)], time.monotonic() + 30)
    bab_s = time.monotonic() - t0 - fals.used
    assert verdict == ("holds", None)
    # y_0 - (-1) is never within half the median |margin|: the far share (halved for each round
    # that found nothing nearer), plus a slice and a step
    assert fals.share() == pytest.approx(0.1 * max(fals.floor, 0.5**fals.stale))
    assert fals.stale <= max(0, fals.progress.get("rounds", 0) - fals.grace)
    assert 0 < fals.used <= 0.1 * bab_s + fals.slice_s + 0.05


def test_a_near_miss_earns_the_search_the_larger_share():
    model = _Bump(torch.tensor([0.5, 0.5, 0.5]))
    # the unsafe region y_0 <= 1e-3 is a tiny ball: near misses in the first sample
    spec = _spec([torch.zeros(3)], [torch.ones(3)], [_row(1.0, 0.0, 1e-3)])
    progress: dict = {}
    steps = sample_search(model, spec, torch.tensor([0]), (3,), samples=256, progress=progress)
    fals = Falsifier(steps, lambda r, x: None, progress, {}, rate=(0.5, 0.1))
    fals.run(5.0, rounds=1)
    assert progress["best"] < 0.5 * progress["scale"]
    assert fals.share() == 0.5


def test_the_share_decays_while_rounds_find_nothing_nearer():
    """Each finished round past the first (grace=1) that does not bring the best sampled margin
    10% nearer halves the share, down to its floor; a round that gains restores it."""
    progress: dict = {"scale": 1.0}
    fals = Falsifier(iter(()), lambda r, x: None, progress, {}, rate=(0.4, 0.08), grace=1)
    assert fals.share() == 0.08  # nothing sampled yet
    shares = []
    for rounds, best in ((1, 0.9), (2, 0.89), (3, 0.88), (4, 0.88), (5, 0.88), (6, 0.87)):
        progress.update(rounds=rounds, best=best)
        shares.append(fals.share())
    assert shares == pytest.approx([0.08, 0.04, 0.02, 0.01, 0.01, 0.01])
    assert fals.share() == pytest.approx(0.01)  # no new round: no change
    progress.update(rounds=7, best=0.4)  # nearer, and now a near miss
    assert fals.share() == 0.4
    progress.update(rounds=9, best=0.39)  # two rounds at once without a gain
    assert fals.share() == pytest.approx(0.1)


def test_the_engine_hands_branch_and_bound_to_the_search_beside_it(monkeypatch):
    calls = []
    monkeypatch.setattr(
        branch_regions.bab, "portfolio", lambda *a: calls.append(a) or ("holds", None)
    )
    assert (
        branch_regions.portfolio_beside([], 1.0, None, None) == ("holds", None) and len(calls) == 1
    )


@pytest.mark.skipif(not ACAS.is_dir(), reason="needs the shared ACAS Xu benchmark")
def test_acas_xu_violations_that_branch_and_bound_took_seconds_for():
    from robustlab.verify import verify

    # on main before the search: 7.8 s (45,921 boxes) and a timeout (116 s)
    for net in ("1_5", "5_3"):
        onnx = ACAS / f"ACASXU_run2a_{net}_batch_2000.onnx"
        r = verify(onnx, ACAS / "prop_2.vnnlib", timeout=60)
        assert r.verdict == "violated", (net, r.stats)
        assert r.stats["found_by"] == "sample search"

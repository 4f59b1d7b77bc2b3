"""Every coefficient form takes the backward pass's steps with the dense rows' results."""

import inspect
import math
from fractions import Fraction

import pytest
import torch

from robustlab.bounds import backward as bw
from robustlab.bounds import rounding, tracker, window
from robustlab.bounds.coef import Coef, Dense, wrap
from robustlab.bounds.graph import graph_of
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.ops.pool import MaxPool

from .nets import make
from .test_window import _random_window


def _close(x, y):
    x = x.dense() if isinstance(x, Coef) else x
    y = y.dense() if isinstance(y, Coef) else y
    assert x.shape == y.shape
    assert (x - y).abs().max() <= 1e-12 * max(1.0, y.abs().max().item())


@pytest.mark.parametrize("seed", range(4))
def test_window_steps_equal_dense_steps(seed):
    g = torch.Generator().manual_seed(seed)
    shared = seed % 2 == 0
    frame = (6, 7)
    win = _random_window(g, 3, 4, 2, 3, 2, frame, shared)
    dense = Dense(win.dense())
    # through a convolution's transpose
    weight = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    op = Conv(weight, torch.randn(2, generator=g, dtype=torch.float64), (1, 1), (1, 1), (1, 1), 1)
    (a_w,), b_w = win.linear(op, [(3, *frame)])
    (a_d,), b_d = dense.linear(op, [(3, *frame)])
    _close(a_w, a_d)
    _close(b_w, b_d)
    # through a relaxation: both forms compute the bias wanted (ub given)
    l = torch.randn(1, 2, *frame, generator=g, dtype=torch.float64)
    u = l + torch.rand(1, 2, *frame, generator=g, dtype=torch.float64)
    la, lb, ua, ub = rounding.relax(ReLU(), l[:, None], u[:, None])
    a_w, neg_w, b_w = win.activation(la, lb, ua, ub, ua - la, False)
    a_d, neg_d, b_d = dense.activation(la, lb, ua, ub, ua - la, False)
    assert neg_w is None
    _close(a_w, a_d)
    d = dense.data
    _close(b_w, (neg_d * ub + (d - neg_d) * lb).flatten(2).sum(-1))
    _close(b_d, b_w)
    assert dense.activation(la, lb, ua, None, ua - la, False)[2] is None  # no bias wanted
    # through max pooling (frame 6 x 7 is the output of a 2 x 2 pool of 12 x 14)
    pool = MaxPool((2, 2), (2, 2), (0, 0))
    # (bounds per example, as in a pass: the rows' batch)
    l = torch.randn(3, 2, 12, 14, generator=g, dtype=torch.float64)
    u = l + torch.rand(3, 2, 12, 14, generator=g, dtype=torch.float64)
    a_w, b_w, seen_w = win.pool(pool, l, u, True)
    a_d, b_d, seen_d = dense.pool(pool, l, u, True)
    _close(a_w, a_d)
    _close(b_w, b_d)
    assert seen_w is win and seen_d is dense
    # sums, negation, [C; -C], the batch's shared rows, dtype: exactly the dense results
    other = _random_window(g, 3, 4, 2, 3, 2, frame, shared)
    assert torch.equal(win.add(other).dense(), win.dense() + other.dense())
    assert torch.equal(win.add(dense).dense(), dense.add(win).dense())
    assert torch.equal(win.negated().dense(), -win.dense())
    assert torch.equal(win.two_rows().dense(), dense.two_rows().dense())
    assert not win.shared() and not dense.shared()  # (the rows were multiplied by a mask)
    assert dense.first().expand(3).shared()
    if shared:  # (positions shared by the batch)
        one = win.first().expand(3)
        assert one.shared()
        assert torch.equal(one.dense(), win.dense()[:1].expand(3, -1, -1, -1, -1))
    assert win.cast(torch.float32).data.dtype == torch.float32
    assert wrap(d).raw is d and wrap(win) is win and win.raw is win


@pytest.mark.parametrize("kind", ["mlp", "cnn", "conv-residual"])
def test_backward_takes_any_form(kind):
    """A tensor and its ``Dense`` give the same bounds; ``two_sided`` / ``two_rows`` as before."""
    net, shape = make(kind, 0)
    graph = graph_of(net, shape)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    region = InputRegion(x - 0.05, x + 0.05)
    bounds = intermediate_bounds(graph, region)
    C = torch.eye(graph.nodes[-1].shape[0], dtype=torch.float64)[None].expand(2, -1, -1)
    out = len(graph.nodes) - 1
    lb = bw.backward(graph, bounds, out, C)
    assert torch.equal(bw.backward(graph, bounds, out, Dense(C)), lb)
    two = bw.two_sided(graph, bounds, out, C)
    assert torch.equal(two.lower, lb)
    assert torch.equal(bw.two_rows(C), torch.cat([C, -C], 1))


def _exact(a, v):
    """``<a, v>`` per row in float64 (a: dense rows, v broadcastable to them)."""
    return (a.double() * v.double()).flatten(2).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shared", [False, True])
def test_every_form_bounds_the_accumulators_sums(dtype, shared):
    """The sums the float32 bookkeeping reads (``Coef.absdot``, ``signed_dot``, ``dot_below``,
    ``gap_step``, ``shifted_step``, ``concretize``, ``negative``): for a window and its dense
    rows, each is a bound in its direction on the exact float64 sum, and the two forms agree."""
    g = torch.Generator().manual_seed(3 + shared)
    frame = (6, 7)
    win = _random_window(g, 3, 4, 2, 3, 2, frame, shared).cast(dtype)
    dense = Dense(win.dense())
    d = dense.data
    n = math.prod(d.shape[2:])
    v = torch.rand(3, 1, 2, *frame, generator=g, dtype=torch.float64)
    s = torch.randn(3, 1, 2, *frame, generator=g, dtype=torch.float64)
    c = torch.randn(3, 2, *frame, generator=g, dtype=torch.float64)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    # v is exact in a's precision where the sums are taken there
    v32, s32 = v.to(dtype).double(), s.to(dtype).double()
    for form in (win, dense):
        up, exact = form.absdot(v32), _exact(d.abs(), v32)
        assert bool((up >= exact).all()) and bool((up <= exact * (1 + 2e-3)).all())
        lo = form.signed_dot(s32, n)
        assert bool((lo <= _exact(d, s32) + 1e-12).all())
        assert bool((form.dot_below(c) <= _exact(d, c[:, None]) + 1e-12).all())
        assert torch.equal(form.negative().dense(), d.clamp(max=0))
        zero = torch.zeros(3, 4, dtype=torch.float64)
        want = _exact(d.clamp(max=0), s32) - _exact(d.abs(), v32)
        got = form.gap_step(zero, None, s32, v32, {})
        assert bool((got <= want + 1e-12).all())
        # within the error terms' SLACK (1e-3) and float32's gamma_n of the sums' magnitudes
        assert bool((want - got <= 2e-3 * _exact(d.abs(), v32 + s32.abs())).all())
        shift = torch.randn(3, 1, 2, *frame, generator=g, dtype=torch.float64)
        steps = v.to(dtype)
        want = _exact(d.clamp(max=0), s) + _exact(d, shift) - _exact(d.abs(), steps)
        got = form.shifted_step(zero, None, s, shift, steps)
        assert bool((got <= want + 1e-12).all())
    lo, hi = c - 0.1, c + 0.1
    box = InputRegion(lo.to(dtype), hi.to(dtype))
    ball = InputRegion(lo.to(dtype), hi.to(dtype), c.to(dtype), 0.05)
    for region in (box, ball):
        x = win.concretize(region)
        y = dense.concretize(region)
        assert (x - y).abs().max() <= tol * max(1.0, y.abs().max().item())


def test_the_accumulators_never_ask_for_a_form():
    """tracker.py and rounding.py take a ``Coef`` and read its sums; neither names a form."""
    for mod in (tracker, rounding):
        src = inspect.getsource(mod)
        assert "Window" not in src and "isinstance(a" not in src, mod.__name__


@pytest.mark.parametrize("rows_batch, bounds_batch", [(3, 1), (1, 3)])
def test_max_pooling_with_batch_one_bounds_or_rows(rows_batch, bounds_batch):
    """Bounds or rows shared by the batch (batch 1 against 3): the window's and the dense rows'
    max pooling steps agree, and equal the step with both at the batch's size."""
    g = torch.Generator().manual_seed(8)
    frame = (6, 7)
    win = _random_window(g, 3, 4, 2, 3, 2, frame, shared=rows_batch == 1)
    if rows_batch == 1:
        win = win.first()
    pool = MaxPool((2, 2), (2, 2), (0, 0))
    l = torch.randn(bounds_batch, 2, 12, 14, generator=g, dtype=torch.float64)
    u = l + torch.rand(bounds_batch, 2, 12, 14, generator=g, dtype=torch.float64)
    a_w, b_w, _ = win.pool(pool, l, u, True)
    a_d, b_d, _ = Dense(win.dense()).pool(pool, l, u, True)
    _close(a_w, a_d)
    _close(b_w, b_d)
    full = Dense(win.dense().expand(3, -1, -1, -1, -1))
    a_f, b_f, _ = full.pool(pool, l.expand(3, -1, -1, -1), u.expand(3, -1, -1, -1), True)
    _close(a_d, a_f)
    _close(b_d, b_f)


def test_window_sums_bound_the_exact_sums_on_a_large_window():
    """A float32 window of 25600 entries (past what the error terms' SLACK covers): its
    ``absdot`` is at least, and its ``signed_dot`` at most, the exact sum (rational arithmetic)."""
    g = torch.Generator().manual_seed(9)
    data = torch.rand(1, 2, 64, 20, 20, generator=g, dtype=torch.float32) + 0.5
    zero = torch.zeros(1, 2, dtype=torch.int64)
    win = window.Window(data, zero, zero, (20, 20))
    v = torch.rand(1, 1, 64, 20, 20, generator=g, dtype=torch.float64) * (1 + 1e-7)
    up, lo = win.absdot(v), win.signed_dot(v)
    v32 = [Fraction(x) for x in v.to(torch.float32).flatten().tolist()]
    v64 = [Fraction(x) for x in v.flatten().tolist()]
    for r in range(2):
        a = [Fraction(x) for x in data[0, r].flatten().tolist()]
        assert Fraction(up[0, r].item()) >= sum(x * y for x, y in zip(a, v32, strict=True))
        assert Fraction(lo[0, r].item()) <= sum(x * y for x, y in zip(a, v64, strict=True))

"""Windows through average pooling and padding: the transpose restricted to a window equals the
dense transpose (autograd's) at 1e-12, and bounds of a net with both contain its outputs."""

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds, window, window_pool
from robustlab.bounds.ops.linear import Generic
from robustlab.bounds.ops.select import Select
from robustlab.bounds.ops.shape import Monotone, per_sample
from robustlab.threat import LpBall

from .test_window import _check_against_dense, _random_window


def _pool_case(seed: int):
    """A random AvgPool2d (kernel, stride, padding, ceil_mode, count_include_pad, divisor)."""
    g = torch.Generator().manual_seed(seed)

    def pick(*v):
        return v[int(torch.randint(len(v), (1,), generator=g))]

    k = (pick(1, 2, 3), pick(2, 3))
    s = (pick(1, 2, 3), pick(1, 2))
    p = (pick(0, k[0] // 2), pick(0, k[1] // 2))
    layer = nn.AvgPool2d(
        k,
        s,
        p,
        ceil_mode=bool(seed % 2),
        count_include_pad=bool(seed % 3),
        divisor_override=3 if seed % 7 == 6 else None,
    )
    return g, layer


@pytest.mark.parametrize("seed", range(14))
def test_avg_pool_window_equals_dense(seed):
    g, layer = _pool_case(seed)
    in_shape = (3, 9, 8) if seed % 4 else (2, 3, 3)  # a small map: the rows reach every input
    op = Generic(layer, terms=None)
    frame = tuple(layer(torch.zeros(1, *in_shape, dtype=torch.float64)).shape[2:])
    win = _random_window(g, 3, 5, in_shape[0], 2, 2, frame, shared=bool(seed % 2))
    res = window.linear_backward(op, win, [in_shape])
    assert res is not None, layer
    _check_against_dense(op, win, in_shape)


def test_avg_pool_divisor_by_hand():
    """3x3 kernel, stride 2, padding 1, ceil mode on a 4x4 map: outputs at rows -1, 1, 3; the
    last window covers rows 3..5 of which only row 3 is in the map (and row 4 is padding)."""
    for include, want in ((False, [2.0, 3.0, 1.0]), (True, [3.0, 3.0, 2.0])):
        assert window_pool.divisor(3, 4, 3, 2, 1, include).tolist() == want
    layer = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    conv, inv, exact = window_pool.pool_conv(Generic(layer), (1, 4, 4))
    assert inv[2, 2].item() == 1.0 and inv[0, 0].item() == 0.25 and not exact


def test_float32_window_only_for_exact_divisors():
    layer = nn.AvgPool2d(3, 3)  # divisor 9: not exact in float32
    op = Generic(layer)
    g = torch.Generator().manual_seed(0)
    win = _random_window(g, 2, 3, 2, 2, 2, (3, 3), shared=False)
    win32 = window.Window(win.data.float(), win.oy, win.ox, win.frame)
    assert window.linear_backward(op, win32, [(2, 9, 9)]) is None
    op2 = Generic(nn.AvgPool2d(2, 2))
    assert window.linear_backward(op2, win32, [(2, 6, 6)]) is not None


@pytest.mark.parametrize("seed", range(8))
def test_pad_window_equals_dense(seed):
    """Zero padding and cropping of the spatial axes (negative pads) as translations."""
    g = torch.Generator().manual_seed(seed)
    pads = torch.randint(-1, 3, (4,), generator=g).tolist()
    in_shape = (2, 7, 6)
    example = torch.zeros(1, *in_shape, dtype=torch.float64)
    op = per_sample(lambda t: nn.functional.pad(t, pads), example, "pad", 0)
    out = op.fn(example)
    assert window_pool.translation(op, in_shape, tuple(out.shape[1:])) == (pads[2], pads[0])
    win = _random_window(g, 3, 4, 2, 2, 3, tuple(out.shape[2:]), shared=bool(seed % 2))
    assert window.linear_backward(op, win, [in_shape]) is not None
    _check_against_dense(op, win, in_shape)


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: t.flip(3),  # a selection, not a translation
        lambda t: t.transpose(2, 3),
        lambda t: nn.functional.avg_pool2d(t, (1, 2), (1, 1), (0, 1)) * 2,  # sums, not copies
        lambda t: nn.functional.pad(t, (0, 0, 0, 0, 1, 0)),  # a channel added
    ],
)
def test_non_translations_are_refused(fn):
    in_shape = (2, 4, 4)
    example = torch.zeros(1, *in_shape, dtype=torch.float64)
    op = Generic(fn)
    out = tuple(fn(example).shape[1:])
    assert window_pool.translation(op, in_shape, out) is None


class PoolNet(nn.Module):
    """Conv -> ReLU -> zero pad -> AvgPool (count_include_pad=False, ceil mode) -> residual
    block -> AvgPool (padding counted) -> crop -> Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.p1 = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.p2 = nn.AvgPool2d(2, 2, 1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = nn.functional.pad(h, (1, 0, 0, 1))
        h = self.p1(h)
        h = torch.relu(self.c2(h) + h)
        h = self.p2(h)[:, :, 1:, :]
        h = torch.relu(nn.functional.pad(h, (0, 0, 1, 0)))
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pool_net_windows_equal_dense_and_contain_outputs(monkeypatch, dtype):
    torch.manual_seed(11)
    net = PoolNet().eval()
    g = torch.Generator().manual_seed(12)
    shape = (2, 10, 9)
    x0 = torch.rand(2, *shape, generator=g)
    assert net(x0).shape == (2, 3)
    threat = LpBall("inf", 0.1)
    calls = []
    real = window.linear_backward

    def spy(op, win, shapes):
        res = real(op, win, shapes)
        calls.append((type(op), res is not None and isinstance(res[0][0], window.Window)))
        return res

    monkeypatch.setattr(window, "linear_backward", spy)
    res = {}
    for flag in (True, False):
        res[flag] = compute_bounds(net, (threat, x0), "crown", dtype=dtype, windows=flag)
    if dtype == torch.float64:
        kept = {t for t, win in calls if win}
        # through the pools and the pads (a Select where the graph builds pads and crops as one)
        assert Generic in kept and (Monotone in kept or Select in kept)
        scale = res[False].upper.abs().max()
        assert (res[True].lower - res[False].lower).abs().max() <= 1e-10 * scale
        assert (res[True].upper - res[False].upper).abs().max() <= 1e-10 * scale
    pts = threat.sample(x0, 10_000, g).double()
    with torch.no_grad():
        out = copy.deepcopy(net).double()(pts.reshape(-1, *shape)).reshape(pts.shape[0], 2, -1)
    b = res[True]
    assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all()

"""Rows kept on their receptive field give exactly the dense computation's bounds."""

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds, crown, window
from robustlab.bounds.ops.linear import Conv
from robustlab.threat import Box, LpBall

from .nets import make


class Block(nn.Module):
    """Strided, dilated and grouped convolutions, a per-pixel affine map, a residual block with a
    1x1 downsampling shortcut, and a final linear layer."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=2, dilation=2)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, groups=3)
        self.c3 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.down = nn.Conv2d(6, 8, 1, stride=2)
        self.c4 = nn.Conv2d(8, 8, (3, 1), padding=(1, 0))
        self.fc = nn.Linear(8 * 5 * 5, 4)
        self.register_buffer("pixel", torch.rand(1, 9, 9) + 0.5)

    def forward(self, x):
        h = torch.relu(self.c1(x) * self.pixel - 0.1)
        h = torch.relu(self.c2(h) + h)
        h = torch.relu(self.c3(h) + self.down(h))
        h = torch.relu(self.c4(h))
        return self.fc(h.flatten(1))


def _nets():
    torch.manual_seed(0)
    yield Block().eval(), (3, 9, 9)
    yield make("cnn", 1)
    yield make("conv-residual", 2)


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("batch", [1, 5])
def test_windows_equal_dense(monkeypatch, case, batch):
    net, shape = list(_nets())[case]
    g = torch.Generator().manual_seed(case)
    x0 = torch.rand(batch, *shape, generator=g)
    calls = []
    real = window.activation_backward
    monkeypatch.setattr(window, "activation_backward", lambda *a: calls.append(1) or real(*a))
    for threat in (LpBall("inf", 0.05), LpBall("2", 0.3)):
        monkeypatch.setattr(crown, "WINDOWS", True)
        win = compute_bounds(net, (threat, x0), "crown")
        monkeypatch.setattr(crown, "WINDOWS", False)
        dense = compute_bounds(net, (threat, x0), "crown")
        assert torch.allclose(win.lower, dense.lower, rtol=1e-9, atol=1e-9)
        assert torch.allclose(win.upper, dense.upper, rtol=1e-9, atol=1e-9)
        assert (win.lower <= net(x0)).all() and (net(x0) <= win.upper).all()
    assert calls  # the windowed path ran


def test_windows_per_example_rows_equal_dense(monkeypatch):
    """Batches whose examples have few unstable neurons each take the per-example path."""
    net, shape = list(_nets())[0]
    x0 = torch.rand(8, *shape, generator=torch.Generator().manual_seed(3))
    lo, hi = x0 - 0.004, x0 + 0.004
    lo[0], hi[0] = x0[0] - 0.05, x0[0] + 0.05  # one example with many unstable neurons
    res = {}
    for flag in (True, False):
        monkeypatch.setattr(crown, "WINDOWS", flag)
        res[flag] = compute_bounds(net, Box(lo, hi), "crown")
    assert torch.allclose(res[True].lower, res[False].lower, rtol=1e-9, atol=1e-9)
    assert torch.allclose(res[True].upper, res[False].upper, rtol=1e-9, atol=1e-9)


def test_window_dense_gather_and_merge_by_hand():
    like = torch.zeros(1, dtype=torch.float64)
    win = window.identity_windows((2, 3, 4), torch.tensor([0, 5, 23]), 2, like)
    dense = win.dense()
    assert dense.shape == (2, 3, 2, 3, 4)
    assert torch.equal(
        dense.reshape(2, 3, -1), torch.eye(24, dtype=torch.float64)[[0, 5, 23]].expand(2, 3, 24)
    )
    t = torch.arange(24.0, dtype=torch.float64).reshape(1, 2, 3, 4)
    assert win.gather(t)[0, :, :, 0, 0].tolist() == [[0, 12], [5, 17], [11, 23]]
    # a 3x3 window around each neuron (a convolution's transpose), partly outside the frame,
    # merged with the 1x1 window into their union
    conv = Conv(torch.ones(2, 2, 3, 3), None, (1, 1), (1, 1), (1, 1), 1)
    (big,), _ = window.linear_backward(conv, win, [(2, 3, 4)])
    assert isinstance(big, window.Window) and big.shape[3:] == (3, 3)
    merged = window.add(win, big)
    assert isinstance(merged, window.Window)
    assert torch.equal(merged.dense(), dense + big.dense())
    assert torch.equal(window.add(win, win.scaled(2.0)).dense(), 3 * dense)


@pytest.mark.parametrize("case", [0, 2])
def test_windowed_alpha_crown_equals_dense(monkeypatch, case):
    """alpha-CROWN's per-row slopes are read on each row's window."""
    net, shape = list(_nets())[case]
    x0 = torch.rand(2, *shape, generator=torch.Generator().manual_seed(4))
    res = {}
    for flag in (True, False):
        monkeypatch.setattr(crown, "WINDOWS", flag)
        res[flag] = compute_bounds(
            net, (LpBall("inf", 0.05), x0), "alpha-crown", alpha_iterations=5
        )
    assert torch.allclose(res[True].lower, res[False].lower, rtol=1e-7, atol=1e-8)
    assert torch.allclose(res[True].upper, res[False].upper, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_float32_windowed_bounds_contain_exact_outputs(norm):
    """The rigorous float32 path on windows (rounding.py), checked with exact evaluation."""
    net, shape = list(_nets())[0]
    exact = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(9)
    x0 = torch.rand(2, *shape, generator=g)
    threat = LpBall(norm, 0.05 if norm == "inf" else 0.3)
    pts = threat.sample(x0, 1500, g).double()
    with torch.no_grad():
        out = exact(pts.reshape(-1, *shape)).reshape(pts.shape[0], 2, -1)
    for method in ("crown", "alpha-crown"):
        b = compute_bounds(net, (threat, x0), method, dtype=torch.float32)
        assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all(), method
        b64 = compute_bounds(net, (threat, x0), method)
        assert ((b.upper - b.lower) <= (b64.upper - b64.lower) * 1.01 + 1e-6).all()

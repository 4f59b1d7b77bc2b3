"""Rows kept on their receptive field give exactly the dense computation's bounds."""

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds import (
    compute_bounds,
    cut,
    intermediate,
    rounding,
    tracker,
    window,
    window_conv,
)
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.ops.shape import ConvTranspose, Resize, per_sample, resize
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
        win = compute_bounds(net, (threat, x0), "crown")  # windows=True: the default
        dense = compute_bounds(net, (threat, x0), "crown", windows=False)
        assert torch.allclose(win.lower, dense.lower, rtol=1e-9, atol=1e-9)
        assert torch.allclose(win.upper, dense.upper, rtol=1e-9, atol=1e-9)
        assert (win.lower <= net(x0)).all() and (net(x0) <= win.upper).all()
    assert calls  # the windowed path ran


def test_windows_per_example_rows_equal_dense():
    """Batches whose examples have few unstable neurons each take the per-example path."""
    net, shape = list(_nets())[0]
    x0 = torch.rand(8, *shape, generator=torch.Generator().manual_seed(3))
    lo, hi = x0 - 0.004, x0 + 0.004
    lo[0], hi[0] = x0[0] - 0.05, x0[0] + 0.05  # one example with many unstable neurons
    res = {}
    for flag in (True, False):
        res[flag] = compute_bounds(net, Box(lo, hi), "crown", windows=flag)
    assert torch.allclose(res[True].lower, res[False].lower, rtol=1e-9, atol=1e-9)
    assert torch.allclose(res[True].upper, res[False].upper, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_windows_is_an_argument_that_reaches_every_row_builder(monkeypatch, method):
    """``windows=False`` keeps every row dense: no identity window is built anywhere (refine,
    the per-example rows, alpha-CROWN's rows, a cut's linear bounds); the default builds them."""
    net, shape = list(_nets())[0]
    x0 = torch.rand(8, *shape, generator=torch.Generator().manual_seed(3))
    lo, hi = x0 - 0.004, x0 + 0.004
    lo[0], hi[0] = x0[0] - 0.05, x0[0] + 0.05  # the per-example path too
    calls = []
    real = window.identity_windows
    monkeypatch.setattr(window, "identity_windows", lambda *a: calls.append(1) or real(*a))
    kw = {"alpha_iterations": 2} if method == "alpha-crown" else {}
    compute_bounds(net, Box(lo, hi), method, windows=False, **kw)
    graph = graph_of(net, shape)
    region = InputRegion(lo.double(), hi.double())
    bounds = intermediate.intermediate_bounds(graph, region, windows=False)
    s = max(i for i in range(graph.output) if window.usable(graph.nodes[i].shape))
    cut.linear_bounds(graph, bounds, s, windows=False)
    assert not calls
    compute_bounds(net, Box(lo, hi), method, **kw)
    assert calls


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
    merged = win.add(big)
    assert isinstance(merged, window.Window)
    assert torch.equal(merged.dense(), dense + big.dense())
    assert torch.equal(win.add(win.scaled(2.0)).dense(), 3 * dense)


@pytest.mark.parametrize("case", [0, 2])
def test_windowed_alpha_crown_equals_dense(case):
    """alpha-CROWN's per-row slopes are read on each row's window."""
    net, shape = list(_nets())[case]
    x0 = torch.rand(2, *shape, generator=torch.Generator().manual_seed(4))
    res = {}
    for flag in (True, False):
        res[flag] = compute_bounds(
            net, (LpBall("inf", 0.05), x0), "alpha-crown", alpha_iterations=5, windows=flag
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


def _random_window(g, batch, rows, c, h, w, frame, shared):
    """Random rows on (h, w) windows at random positions (partly outside the frame: zero there)."""
    H, W = frame
    k = 1 if shared else batch
    oy = torch.randint(-h + 1, H, (k, rows), generator=g)
    ox = torch.randint(-w + 1, W, (k, rows), generator=g)
    data = torch.randn(batch, rows, c, h, w, generator=g, dtype=torch.float64)
    ys = oy[..., None] + torch.arange(h)
    xs = ox[..., None] + torch.arange(w)
    inside = ((ys >= 0) & (ys < H))[..., None, :, None] & ((xs >= 0) & (xs < W))[..., None, None, :]
    if shared:
        data = data[:1].expand(batch, -1, -1, -1, -1)
    return window.Window(data * inside, oy, ox, frame)


def _check_against_dense(op, win, in_shape):
    res = window.linear_backward(op, win, [in_shape])
    assert res is not None
    (a_win,), bias = res
    (a_dense,), bias_dense = op.backward(win.dense(), [in_shape])
    got = a_win.dense() if isinstance(a_win, window.Window) else a_win
    scale = a_dense.abs().max()
    assert got.shape == a_dense.shape
    assert (got - a_dense).abs().max() <= 1e-12 * scale
    assert (bias - bias_dense).abs().max() <= 1e-12 * max(1.0, bias_dense.abs().max().item())
    return a_win


@pytest.mark.parametrize("seed", range(12))
def test_conv_transpose_window_equals_dense(monkeypatch, seed):
    """The transposed convolution restricted to a window: random kernels, strides, padding,
    output padding, dilation and groups; per-phase matrices and (every third case) patches."""
    g = torch.Generator().manual_seed(seed)
    if seed % 3 == 0:
        monkeypatch.setattr(window_conv, "MATRIX_ENTRIES", 0)

    def pick(*v):
        return v[int(torch.randint(len(v), (1,), generator=g))]

    groups = pick(1, 1, 2)
    k = (pick(1, 2, 3, 4), pick(1, 2, 3))
    s = (pick(1, 2, 3), pick(1, 2))
    d = (pick(1, 1, 2), 1)
    p = (pick(0, 1, 2), pick(0, 1))
    op_pad = (pick(0, s[0] - 1), 0)
    hw = (6, 5) if seed % 4 else (2, 3)  # a small map: the rows reach every input (dense step)
    p = p if seed % 4 else (0, 0)
    c_in, c_out = 2 * groups, 3 * groups
    m = (
        nn.ConvTranspose2d(c_in, c_out, k, s, p, op_pad, groups, True, d)
        .double()
        .requires_grad_(False)
    )
    x = torch.zeros(1, c_in, *hw, dtype=torch.float64)
    out_shape = tuple(m(x).shape[1:])
    op = ConvTranspose(m.weight, m.bias, s, p, op_pad, d, groups)
    h, w = pick(1, 2, 3), pick(1, 3)
    win = _random_window(g, 3, 5, c_out, h, w, out_shape[1:], shared=bool(seed % 2))
    a_win = _check_against_dense(op, win, (c_in, *hw))
    if isinstance(a_win, window.Window):
        assert a_win.data.shape[3] <= (h - 1 + d[0] * (k[0] - 1)) // s[0] + 1


@pytest.mark.parametrize("seed", range(12))
def test_resize_window_equals_dense(seed):
    """Nearest and bilinear resizing (up and down, align_corners both ways) on windows."""
    g = torch.Generator().manual_seed(seed)
    mode = ["nearest", "nearest-exact", "bilinear", "bilinear"][seed % 4]
    align = None if mode.startswith("nearest") else bool(seed % 8 >= 4)
    size = [(13, 7), (4, 9), (20, 20)][seed % 3]
    layer = nn.Upsample(size=size, mode=mode, align_corners=align)
    example = torch.zeros(1, 2, 8, 6, dtype=torch.float64)
    op = resize(per_sample(layer, example, "resize", None), example)
    assert isinstance(op, Resize) and op.rows is not None
    win = _random_window(g, 2, 7, 2, 3, 2, size, shared=seed % 3 == 0)
    _check_against_dense(op, win, (2, 8, 6))


class Generator(nn.Module):
    """A generator-like net: Linear -> reshape -> ConvTranspose -> ReLU -> Upsample -> Conv."""

    def __init__(self, mode):
        super().__init__()
        self.fc = nn.Linear(4, 3 * 4 * 4)
        self.up1 = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1, output_padding=1)
        self.up2 = nn.Upsample(scale_factor=2, mode=mode)
        self.conv = nn.Conv2d(4, 3, 3, padding=1)
        self.conv2 = nn.ConvTranspose2d(3, 2, 3, stride=2)

    def forward(self, x):
        h = torch.relu(self.fc(x)).reshape(-1, 3, 4, 4)
        h = torch.relu(self.up1(h))
        h = torch.relu(self.conv(self.up2(h)))
        return self.conv2(h).flatten(1)[:, ::37]


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_generator_windows_equal_dense_and_contain_outputs(monkeypatch, mode):
    torch.manual_seed(5)
    net = Generator(mode).eval()
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(2, 4, generator=g)
    threat = LpBall("inf", 0.5)
    calls = []
    real = window.linear_backward
    monkeypatch.setattr(window, "linear_backward", lambda *a: calls.append(a[0]) or real(*a))
    res = {}
    for flag in (True, False):
        res[flag] = compute_bounds(net, (threat, x0), "crown", windows=flag)
    assert {type(op) for op in calls} >= {ConvTranspose, Resize}
    scale = res[False].upper.abs().max()
    assert (res[True].lower - res[False].lower).abs().max() <= 1e-10 * scale
    assert (res[True].upper - res[False].upper).abs().max() <= 1e-10 * scale
    pts = threat.sample(x0, 2000, g).double()
    with torch.no_grad():
        out = copy.deepcopy(net).double()(pts.reshape(-1, 4)).reshape(pts.shape[0], 2, -1)
    assert (out >= res[True].lower).all() and (out <= res[True].upper).all()


def test_float32_windows_through_nearest_upsampling(monkeypatch):
    """Nearest resizing is in the float32 bookkeeping: its windowed rows stay rigorous."""
    torch.manual_seed(7)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(3, 3, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 2),
    ).eval()
    g = torch.Generator().manual_seed(8)
    x0 = torch.rand(2, 2, 4, 4, generator=g)
    threat = LpBall("inf", 0.1)
    calls = []
    real = window.linear_backward
    monkeypatch.setattr(
        window, "linear_backward", lambda *a: calls.append((a[0], a[1].data.dtype)) or real(*a)
    )
    b = compute_bounds(net, (threat, x0), "crown", dtype=torch.float32, fallback=False)
    assert (Resize, torch.float32) in {(type(op), t) for op, t in calls}
    pts = threat.sample(x0, 1500, g).double()
    with torch.no_grad():
        out = copy.deepcopy(net).double()(pts.reshape(-1, 2, 4, 4)).reshape(pts.shape[0], 2, -1)
    assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all()


@pytest.mark.parametrize("seed", range(6))
def test_conv_window_without_matrix_equals_dense(monkeypatch, seed):
    """Convolutions on windows too large for a cached matrix: a product and a fold."""
    monkeypatch.setattr(window_conv, "MATRIX_ENTRIES", 0)
    g = torch.Generator().manual_seed(seed)
    groups = [1, 2][seed % 2]
    s, d, k = (1 + seed % 3, 1 + seed % 2), (1 + seed // 3, 1), (3, 2)
    weight = torch.randn(4 * groups, 2, *k, generator=g, dtype=torch.float64)
    bias = torch.randn(4 * groups, generator=g, dtype=torch.float64)
    op = Conv(weight, bias, s, (1, 0), d, groups)
    x = torch.zeros(1, 2 * groups, 9, 8, dtype=torch.float64)
    frame = tuple(op.forward(x).shape[2:])
    win = _random_window(g, 2, 4, 4 * groups, 2, 3, frame, shared=seed % 3 == 0)
    _check_against_dense(op, win, (2 * groups, 9, 8))


@pytest.mark.parametrize("seed", range(6))
def test_float32_conv_transpose_patches_within_rounding_bound(monkeypatch, seed):
    """The transposed convolution's transpose on large float32 windows (rows grouped by phase,
    padded and convolved by a direct or GEMM conv2d): within the bookkeeping's bound
    gamma_n |A| |W| of the exact (float64) transpose of the same float32 numbers."""
    monkeypatch.setattr(window_conv, "MATRIX_ENTRIES", 0)
    g = torch.Generator().manual_seed(seed)
    groups, s = (1, 2)[seed % 2], (1 + seed % 3, 2)
    k, p = (4, 3), (seed % 2, 1)
    m = nn.ConvTranspose2d(2 * groups, 3 * groups, k, s, p, groups=groups).requires_grad_(False)
    hw = (7, 6)
    out_shape = tuple(m(torch.zeros(1, 2 * groups, *hw)).shape[1:])
    op = ConvTranspose(m.weight, m.bias, s, p, (0, 0), (1, 1), groups)
    win64 = _random_window(g, 3, 9, 3 * groups, 4, 5, out_shape[1:], shared=seed % 3 == 0)
    win = window.Window(win64.data.float(), win64.oy, win64.ox, win64.frame)
    calls = []
    real = nn.functional.conv2d
    monkeypatch.setattr(nn.functional, "conv2d", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    (got,), _ = window.linear_backward(op, win, [(2 * groups, *hw)])
    assert calls and got.data.dtype == torch.float32
    got = got.dense() if isinstance(got, window.Window) else got
    dense = win64.dense().float().double()
    op64 = ConvTranspose(m.weight.double(), None, s, p, (0, 0), (1, 1), groups)
    (exact,), _ = op64.backward(dense, [(2 * groups, *hw)])
    abs64 = ConvTranspose(m.weight.double().abs(), None, s, p, (0, 0), (1, 1), groups)
    (size,), _ = abs64.backward(dense.abs(), [(2 * groups, *hw)])
    bound = rounding.gamma(op.rounding_terms(out_shape)) * size
    assert ((got.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunks_of_rows_share_relaxations_and_equal_one_pass(monkeypatch, dtype):
    """``intermediate_bounds`` split into many chunks of window rows (a pass each): every chunk
    reads the same relaxations and float32 references (computed once per node's bounds, not
    once per pass), and the bounds equal those of one pass per node (to the rounding of other
    batch shapes)."""
    net, shape = list(_nets())[2]
    x0 = torch.rand(1, *shape, generator=torch.Generator().manual_seed(4))
    graph = graph_of(net, shape)
    region = InputRegion((x0 - 0.02).to(dtype), (x0 + 0.02).to(dtype))
    if dtype == torch.float32:
        region = InputRegion(
            rounding.round_down((x0 - 0.02).double(), dtype),
            -rounding.round_down(-(x0 + 0.02).double(), dtype),
        )
    one = intermediate.intermediate_bounds(graph, region, "crown")
    calls = []
    real = rounding.relax
    monkeypatch.setattr(rounding, "relax", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(tracker, "relax", rounding.relax)
    monkeypatch.setattr(intermediate, "MAX_ELEMENTS", 2**9)
    many = intermediate.intermediate_bounds(graph, region, "crown")
    activations = sum(hasattr(n.op, "relax") for n in graph.nodes)
    assert 0 < len(calls) <= activations * (activations + 1) // 2
    tol = 1e-10 if dtype == torch.float64 else 1e-4  # other batch shapes: other roundings
    for i in one:
        scale = 1 + one[i].upper.abs().max().item()
        assert (one[i].lower - many[i].lower).abs().max() <= tol * scale
        assert (one[i].upper - many[i].upper).abs().max() <= tol * scale

"""Hand-computed bounds for the linear rules (transposed convolution, resizing, slicing,
reductions, concatenation with constants, selection by a mask, products with constants) and for
the products of two input-dependent tensors."""

import copy
import math
import random

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds, window_conv
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops import transposed
from robustlab.bounds.ops.base import Bounds
from robustlab.bounds.ops.bilinear import MatMul, Mul
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.ops.reduce import MaxReduce
from robustlab.threat import Box

F64 = torch.float64


def box(lo, hi):
    return Box(torch.tensor([lo], dtype=F64), torch.tensor([hi], dtype=F64))


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def bounds(fn, lo, hi, method="crown"):
    b = compute_bounds(Fn(fn), box(lo, hi), method)
    return b.lower.flatten(1)[0].tolist(), b.upper.flatten(1)[0].tolist()


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_conv_transpose_by_hand(method):
    """A 1 -> 1 channel transposed convolution with kernel [[1, 2], [3, 4]], stride 1, on a
    2 x 2 input in [0, 1] (one entry in [-1, 1]): output (0, 0) is 1 x00 exactly, the centre
    4 x00 + 3 x01 + 2 x10 + 1 x11."""
    m = nn.ConvTranspose2d(1, 1, 2, bias=True)
    m.weight.data = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    m.bias.data = torch.tensor([0.5])
    lo = [[[-1.0, 0.0], [0.0, 0.0]]]
    hi = [[[1.0, 1.0], [1.0, 1.0]]]
    b = compute_bounds(m, box(lo, hi), method)
    low, up = b.lower.flatten(1)[0], b.upper.flatten(1)[0]  # 3 x 3 outputs
    assert low[0].item() == -0.5 and up[0].item() == 1.5
    assert low[4].item() == pytest.approx(-4 + 0.5)
    assert up[4].item() == pytest.approx(4 + 3 + 2 + 1 + 0.5)


def test_conv_transpose_strided_matches_its_samples_exactly():
    """Linear: CROWN's bounds are attained (corners of the box), so they are exact."""
    torch.manual_seed(0)
    m = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, groups=1).eval()
    lo = torch.zeros(1, 2, 3, 3, dtype=F64)
    b = compute_bounds(m, Box(lo, lo + 1), "crown")
    w = m.weight.detach().double()
    # every output's bound is bias +- the sum of its weights' positive / negative parts
    ones = torch.ones(1, 2, 3, 3, dtype=F64)
    pos = nn.functional.conv_transpose2d(ones, w.clamp(min=0), None, 2, 1, 1)
    neg = nn.functional.conv_transpose2d(ones, w.clamp(max=0), None, 2, 1, 1)
    bias = m.bias.detach().double().view(1, -1, 1, 1)
    up, low = (pos + bias).flatten(1), (neg + bias).flatten(1)
    assert torch.allclose(b.upper.double(), up) and torch.allclose(b.lower.double(), low)


def test_upsample_nearest_and_bilinear_by_hand():
    up = nn.Upsample(scale_factor=2)
    b = compute_bounds(up, box([[0.0, 1.0]], [[2.0, 3.0]]), "crown")
    assert b.lower[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    lin = nn.Upsample(size=3, mode="linear", align_corners=True)
    b = compute_bounds(lin, box([[0.0, 2.0]], [[1.0, 4.0]]), "crown")
    assert b.lower[0].tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert b.upper[0].tolist() == pytest.approx([1.0, 2.5, 4.0])


def test_slicing_and_selection_are_exact():
    lo, hi = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert bounds(lambda x: x[:, 1:5:2], lo, hi) == ([1.0, 3.0], [1.5, 3.5])
    idx = torch.tensor([5, 0, 5])
    assert bounds(lambda x: torch.index_select(x, 1, idx), lo, hi) == (
        [5.0, 0.0, 5.0],
        [5.5, 0.5, 5.5],
    )
    assert bounds(lambda x: torch.flip(x, [1])[:, :2], lo, hi) == ([5.0, 4.0], [5.5, 4.5])
    assert bounds(lambda x: torch.split(x, [2, 4], 1)[1][:, 0], lo, hi) == ([2.0], [2.5])
    assert bounds(lambda x: x.view(-1, 2, 3)[:, 1, -1], lo, hi) == ([5.0], [5.5])


def test_reductions_by_hand():
    lo, hi = [0.0, -1.0, 2.0, 1.0], [1.0, 1.0, 3.0, 2.0]
    for method in ("ibp", "crown"):
        assert bounds(lambda x: x.sum(1, keepdim=True), lo, hi, method) == ([2.0], [7.0])
        assert bounds(lambda x: torch.mean(x, dim=1), lo, hi, method) == ([0.5], [1.75])  # ()
        # the max: entry 2 dominates every other upper bound but entry 3 (u = 2 < l = 2? no):
        # l_best = 2 >= max other upper (2): exact
        assert bounds(lambda x: x.amax(1), lo, hi, method) == ([2.0], [3.0])
        assert bounds(lambda x: torch.amin(x, 1), lo, hi, method) == ([-1.0], [1.0])


def test_amax_relaxation_is_exact_or_the_largest_upper_bound():
    op = MaxReduce((0,))
    l = torch.tensor([[0.0, 2.0, 1.0]], dtype=F64)
    u = torch.tensor([[1.0, 3.0, 2.5]], dtype=F64)
    best, exact, u_max = op.relax_indices(l, u)
    assert best.item() == 1 and not exact.item() and u_max.item() == 3.0
    A = torch.tensor([[[-1.0]]], dtype=F64)  # lower bound of -max: -max >= -3
    a_in, bias = op.backward(A, l, u)
    assert a_in.abs().sum() == 0 and bias.item() == -3.0


def test_concatenation_with_a_constant_and_where():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.tensor([[7.0, 8.0]]))

        def forward(self, x):
            h = torch.cat([self.c.expand(x.shape[0], -1), x], 1)
            return torch.where(torch.tensor([True, False, True, True]), h, 2 * h)

    b = compute_bounds(Net(), box([0.0, 1.0], [1.0, 2.0]), "crown")
    assert b.lower[0].tolist() == [7.0, 16.0, 0.0, 1.0]
    assert b.upper[0].tolist() == [7.0, 16.0, 1.0, 2.0]


def test_matmul_with_constants():
    w = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    assert bounds(lambda x: x.view(-1, 1, 2) @ w, [0.0, 0.0], [1.0, 1.0]) == (
        [0.0, -1.0],
        [3.0, 0.5],
    )
    assert bounds(lambda x: (w @ x.view(-1, 2, 1))[:, :, 0], [0.0, 0.0], [1.0, 1.0]) == (
        [-1.0, 0.0],
        [1.0, 2.5],
    )


def test_mccormick_planes_and_products_by_hand():
    """x in [1, 2], y in [3, 4]: xy >= 3x + y - 3 and xy <= 4x + y - 4 (auto_LiRPA's planes);
    CROWN's bounds of xy are [3, 8], attained at corners; x (1 x 2) @ y (2 x 1) likewise."""
    bx = Bounds(torch.tensor([[1.0]], dtype=F64), torch.tensor([[2.0]], dtype=F64))
    by = Bounds(torch.tensor([[3.0]], dtype=F64), torch.tensor([[4.0]], dtype=F64))
    (xl, yl, cl), (xu, yu, cu) = Mul().planes(bx, by, None)
    assert (xl.item(), yl.item(), cl.item()) == (3.0, 1.0, -3.0)
    assert (xu.item(), yu.item(), cu.item()) == (4.0, 1.0, -4.0)
    for method in ("ibp", "crown", "alpha-crown"):
        assert bounds(lambda v: v[:, :1] * v[:, 1:], [1.0, 3.0], [2.0, 4.0], method) == (
            [3.0],
            [8.0],
        )
    mm = MatMul().ibp(
        Bounds(torch.tensor([[[1.0, -1.0]]]), torch.tensor([[[2.0, 1.0]]])),
        Bounds(torch.tensor([[[3.0], [0.0]]]), torch.tensor([[[4.0], [2.0]]])),
    )
    assert (mm.lower.item(), mm.upper.item()) == (3.0 - 2.0, 8.0 + 2.0)


def test_softmax_of_two_entries_is_a_sigmoid_of_their_difference():
    lo, hi = [-1.0, 0.0], [1.0, 0.5]
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    for method in ("ibp", "crown"):
        low, up = bounds(lambda x: torch.softmax(x, 1), lo, hi, method)
        assert low[0] == pytest.approx(s(-1.0 - 0.5)) and up[0] == pytest.approx(s(1.0 - 0.0))
        assert low[1] == pytest.approx(s(0.0 - 1.0)) and up[1] == pytest.approx(s(0.5 + 1.0))


def test_layer_norm_of_two_features_by_hand():
    """x1 in [1, 2], x2 in [-1, 0]: centred c1 = (x1 - x2) / 2 in [0.5, 1.5], variance c1^2 in
    [0.25, 2.25], so IBP gives c1 / sqrt(var + eps) in [0.5 / sqrt(2.25 + eps), 1.5 / sqrt(0.25 + eps)]."""
    eps = 1e-5
    low, up = bounds(
        lambda x: nn.functional.layer_norm(x, (2,), eps=eps), [1.0, -1.0], [2.0, 0.0], "ibp"
    )
    assert low[0] == pytest.approx(0.5 / math.sqrt(2.25 + eps))
    assert up[0] == pytest.approx(1.5 / math.sqrt(0.25 + eps))
    low_c, up_c = bounds(
        lambda x: nn.functional.layer_norm(x, (2,), eps=eps), [1.0, -1.0], [2.0, 0.0]
    )
    assert low[0] <= low_c[0] <= 1 / math.sqrt(1 + 4 * eps) <= up_c[0] <= up[0]


def test_graph_sizes_of_expansions():
    """softmax: one operation relaxed jointly (ops/softmax.py); log-softmax over n entries:
    pairwise differences, exp, sum, +1, log, negation."""
    ops = [type(n.op).__name__ for n in graph_of(Fn(lambda x: torch.softmax(x, 1)), (3,)).nodes[1:]]
    assert ops == ["Softmax"]
    log = graph_of(Fn(lambda x: torch.log_softmax(x, 1)), (3,)).nodes[1:]
    assert [type(n.op).__name__ for n in log] == [
        "PairDiff",
        "Exp",
        "Monotone",
        "ScaleShift",
        "Log",
        "ScaleShift",
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("kernel", "size"), [((4, 4), (8, 12)), ((2, 3), (6, 9)), ((1, 1), (3, 3))]
)
def test_patch_embedding_backward_is_the_transposed_convolution(kernel, size, dtype):
    """A convolution with stride = kernel (a vision transformer's patches) goes backward by one
    matrix product: the same coefficients as conv_transpose2d and as autograd's vector-Jacobian
    product; CROWN bounds on it are exact (a linear layer on a box)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, *kernel, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    op = Conv(w, bias, kernel, (0, 0), (1, 1), 1)
    out = (5, size[0] // kernel[0], size[1] // kernel[1])
    assert op._patches(w, (0, 0))
    A = torch.randn(2, 7, *out, generator=g, dtype=dtype)
    (a_in,), _ = op.backward(A, [(3, *size)])
    ref = nn.functional.conv_transpose2d(A.reshape(14, *out), w.to(dtype), None, kernel)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert torch.allclose(a_in.reshape(14, 3, *size), ref, atol=tol, rtol=tol)
    x = torch.randn(1, 3, *size, dtype=torch.float64, requires_grad=True)
    y = nn.functional.conv2d(x, w, bias, kernel)
    (vjp,) = torch.autograd.grad(y, x, A[0, 0].double()[None])
    assert torch.allclose(a_in[0, 0].double(), vjp[0], atol=tol, rtol=tol)
    conv = nn.Conv2d(3, 5, kernel, stride=kernel)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(bias)
    w32, b32 = conv.weight.detach().double(), conv.bias.detach().double()
    lo, hi = x.detach() - 0.1, x.detach() + 0.1
    b = compute_bounds(conv, Box(lo, hi), "crown")
    mid = nn.functional.conv2d(x.detach(), w32, b32, kernel).reshape(b.lower.shape)
    rad = nn.functional.conv2d(torch.full_like(lo, 0.1), w32.abs(), None, kernel)
    rad = rad.reshape(b.lower.shape)
    assert torch.allclose(b.lower, mid - rad, atol=1e-6) and torch.allclose(
        b.upper, mid + rad, atol=1e-6
    )
    assert (b.lower <= mid - rad + 1e-12).all() and (b.upper >= mid + rad - 1e-12).all()


def _random_transposed_case(rng):
    """A random transposed convolution (1-d or 2-d; strides 1-3, dilation, groups, padding,
    output padding, odd sizes) and rows for it."""
    dim = rng.choice([1, 2, 2])
    g = rng.choice([1, 1, 2, 3])
    c_out, c_in = g * rng.randint(1, 4), g * rng.randint(1, 4)
    k = [rng.randint(1, 5) for _ in range(dim)]
    s = [rng.randint(1, 3) for _ in range(dim)]
    d = [rng.choice([1, 1, 2, 3]) for _ in range(dim)]
    p = [rng.randint(0, 3) for _ in range(dim)]
    op = [rng.randint(0, max(s[i], d[i]) - 1) for i in range(dim)]
    size = [rng.randint(1, 9) for _ in range(dim)]
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    x = torch.randn(rng.randint(1, 7), c_out, *size, generator=gen, dtype=F64)
    w = torch.randn(c_out, c_in // g, *k, generator=gen, dtype=F64)
    return x, w, (s, p, op, g, d)


def _pytorch_cases(seed: int, n: int, grad: bool = False):
    """``n`` random transposed convolutions that PyTorch accepts (it refuses empty outputs):
    (x, w, args, PyTorch's output); ``grad``: x requires its gradient."""
    rng = random.Random(seed)
    while n:
        x, w, args = _random_transposed_case(rng)
        f = nn.functional.conv_transpose2d if x.dim() == 4 else nn.functional.conv_transpose1d
        x.requires_grad_(grad)
        try:
            ref = f(x, w, None, *args)
        except RuntimeError:
            continue
        yield x, w, args, ref
        n -= 1


@pytest.mark.parametrize("chunk", [None, 64])
def test_float64_transposed_convolution_equals_pytorchs(monkeypatch, chunk):
    """ops.transposed.conv_transpose's float64 formulations (per phase, by fold, the rule's
    pick; whole or in chunks of rows) equal PyTorch's conv_transpose{1,2}d to float64 rounding
    on random shapes."""
    if chunk is not None:
        monkeypatch.setattr(transposed, "CHUNK_BYTES", chunk)
    for x, w, args, ref in _pytorch_cases(17, 150):
        for how in ("phases", "fold", None):
            got = transposed.conv_transpose(x, w, *args, how=how)
            assert got.shape == ref.shape
            err = (got - ref).abs().max() / ref.abs().max().clamp_min(1e-300)
            assert err < 1e-12, (how, x.shape, w.shape, args, float(err))


@pytest.mark.parametrize("chunk", [None, 64])
def test_float64_transposed_convolution_gradient_is_pytorchs(monkeypatch, chunk):
    """Autograd's derivative in x through its float64 formulations equals autograd's through
    conv_transpose{1,2}d to float64 rounding on random shapes."""
    if chunk is not None:
        monkeypatch.setattr(transposed, "CHUNK_BYTES", chunk)
    for x, w, args, ref in _pytorch_cases(29, 60, grad=True):
        g = torch.randn_like(ref)
        (want,) = torch.autograd.grad(ref, x, g)
        for how in ("phases", "fold", None):
            (got,) = torch.autograd.grad(transposed.conv_transpose(x, w, *args, how=how), x, g)
            err = (got - want).abs().max() / want.abs().max().clamp_min(1e-300)
            assert err < 1e-12, (how, x.shape, w.shape, args, float(err))


def test_float32_transposed_convolution_keeps_pytorchs_path():
    """float32 (the rigorous mode counts the terms PyTorch's convolution sums) is PyTorch's
    conv_transpose2d, bit for bit."""
    rng = random.Random(3)
    for _ in range(20):
        x, w, args = _random_transposed_case(rng)
        x, w = x.float(), w.float()
        f = nn.functional.conv_transpose2d if x.dim() == 4 else nn.functional.conv_transpose1d
        try:
            ref = f(x, w, None, *args)
        except RuntimeError:
            continue
        assert torch.equal(transposed.conv_transpose(x, w, *args), ref)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "size"),
    [
        (1, 1, 1, 1, (16, 16)),
        (2, 1, 1, 1, (15, 16)),
        (3, 2, 2, 2, (13, 11)),
        (1, 0, 3, 4, (12, 12)),
    ],
)
def test_conv_backward_float64_is_the_vector_jacobian_product(
    stride, padding, dilation, groups, size
):
    """Conv.backward in float64 (the rule's formulation, input sizes a stride drops recovered by
    output padding) equals autograd's vector-Jacobian product of the convolution."""
    g = torch.Generator().manual_seed(stride + groups)
    w = torch.randn(8, 8 // groups, 3, 3, generator=g, dtype=F64)
    op = Conv(w, None, (stride, stride), (padding, padding), (dilation, dilation), groups)
    x = torch.randn(1, 8, *size, dtype=F64, requires_grad=True)
    y = op.forward(x)
    A = torch.randn(2, 5, *y.shape[1:], generator=g, dtype=F64)
    (a_in,), _ = op.backward(A, [(8, *size)])
    for i in range(2):
        for j in range(5):
            (vjp,) = torch.autograd.grad(y, x, A[i, j][None], retain_graph=True)
            assert torch.allclose(a_in[i, j], vjp[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("matrix_entries", [2**22, 0])
def test_window_convolution_float64_paths_agree(monkeypatch, matrix_entries):
    """CROWN on a small CNN in float64 with windows, their convolution steps as cached matrices or
    as transposed convolutions (ops.transposed), equals the bounds with dense rows, and contains
    sampled outputs."""
    monkeypatch.setattr(window_conv, "MATRIX_ENTRIES", matrix_entries)
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, dilation=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )
    x = torch.rand(1, 2, 16, 16, dtype=F64)
    region = Box(x - 0.02, x + 0.02)
    win = compute_bounds(net, region, "crown")
    dense = compute_bounds(net, region, "crown", windows=False)
    scale = dense.upper.abs().max()
    assert (win.lower - dense.lower).abs().max() <= 1e-12 * scale
    assert (win.upper - dense.upper).abs().max() <= 1e-12 * scale
    samples = x + (torch.rand(256, 2, 16, 16, dtype=F64) * 2 - 1) * 0.02
    with torch.no_grad():
        out = copy.deepcopy(net).double()(samples)
    assert (out >= win.lower).all() and (out <= win.upper).all()

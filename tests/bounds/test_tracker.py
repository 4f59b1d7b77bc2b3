"""The float32 bookkeeping of CROWN's backward passes (tracker.py): on ReLU networks with dense
rows, receptive-field windows, batch norm and residual additions (where a linear step's rounding
is folded into the relaxation step above it, or bounded on its own after a sum), float32 bounds
contain the float64 outputs even where rounding exceeds the region's width, and are never
tighter than float64 CROWN's; on generators too (transposed convolutions, 1-D and 2-D, grouped),
whose float32 transpose is a direct or GEMM convolution (``shape._conv_gemm``)."""

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.threat import Box


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c3 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 3 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.bn(self.c2(h)) + h)
        return self.fc(torch.relu(self.c3(h)).flatten(1))


class Generator(nn.Module):
    """A dense layer into transposed convolutions (2-D grouped and strided, then 1-D), ReLUs,
    a convolution and a dense head: a cGAN generator and discriminator in small."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4 * 3 * 3)
        self.up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2)
        self.up1 = nn.ConvTranspose1d(4, 2, 3, stride=2)
        self.conv = nn.Conv1d(2, 3, 3, stride=2)
        self.head = nn.Linear(3 * 6, 2)

    def forward(self, x):
        h = torch.relu(self.up(torch.relu(self.fc(x)).reshape(-1, 4, 3, 3)))
        h = torch.relu(self.up1(h.sum(2)))
        return self.head(torch.relu(self.conv(h)).flatten(1))


def _net(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(7)
    if name == "generator":
        return Generator().eval(), (3,)
    if name == "mlp":
        net = nn.Sequential(
            nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4)
        )
        return net.eval(), (6,)
    if name == "cnn":
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 3 * 3, 3),
        )
        return net.eval(), (2, 5, 5)
    net = Residual()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval(), (2, 5, 5)


NETS = ["mlp", "cnn", "residual", "generator"]


def _outputs(net, lo, hi, g, n=3000):
    pts = lo.double() + (hi - lo).double() * torch.rand(n, *lo.shape[1:], generator=g).double()
    with torch.no_grad():
        return copy.deepcopy(net).double()(torch.cat([pts, lo.double(), hi.double()]))


@pytest.mark.parametrize("name", NETS)
def test_float32_crown_contains_exact_outputs_where_rounding_dominates(name):
    """Inputs near 1000 with a width of 1e-3, the first layer's bias bringing its outputs back to
    moderate values: float32 rounding is larger than the region."""
    net, shape = _net(name)
    first = next(m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    with torch.no_grad():
        first.bias -= 1000.0 * first.weight.flatten(1).sum(1)
    g = torch.Generator().manual_seed(3)
    lo = 1000.0 + torch.rand(1, *shape, generator=g)
    hi = lo + 1e-3
    out = _outputs(net, lo, hi, g)
    b = compute_bounds(net, Box(lo, hi), "crown", dtype=torch.float32, fallback=False)
    assert b.lower.dtype == torch.float32
    assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all()


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("batch", [1, 5])
def test_float32_crown_contains_samples_and_is_never_tighter_than_float64(name, batch):
    """float32 lower <= float64 lower + ~1e-12 (never tighter than the exact value of the same
    bound), float32 upper likewise; and only slightly looser (the rounding terms are ~1e-6 of
    the intervals)."""
    net, shape = _net(name)
    g = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, *shape, generator=g)
    lo, hi = x - 0.05, x + 0.05
    b64 = compute_bounds(net, Box(lo, hi), "crown", dtype=torch.float64)
    b32 = compute_bounds(net, Box(lo, hi), "crown", dtype=torch.float32, fallback=False)
    l64, u64 = b64.lower, b64.upper
    l32, u32 = b32.lower.double(), b32.upper.double()
    tiny = 1e-12 * (1 + torch.maximum(l64.abs(), u64.abs()))
    assert (l32 <= l64 + tiny).all() and (u32 >= u64 - tiny).all()
    width = u64 - l64
    assert (l64 - l32 <= 1e-3 * width + 1e-5).all() and (u32 - u64 <= 1e-3 * width + 1e-5).all()
    for e in range(batch):
        out = _outputs(net, lo[e : e + 1], hi[e : e + 1], g, 1000)
        assert (out >= l32[e]).all() and (out <= u32[e]).all()


@pytest.mark.parametrize("name", NETS)
def test_float32_crown_contains_the_exact_range_of_a_linear_network(name):
    """Every ReLU stable (hidden biases raised): the network is affine on the region, its
    exact range per output is ``f(c) +- |J| r`` (float64), CROWN's relaxation is exact, and only
    the float32 rounding bound separates the bounds from that range."""
    net, shape = _net(name)
    first = next(m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    with torch.no_grad():
        first.bias -= 1000.0 * first.weight.flatten(1).sum(1)
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.bias += 20.0 * m.weight.abs().flatten(1).sum(1)
    g = torch.Generator().manual_seed(5)
    lo = 1000.0 + torch.rand(1, *shape, generator=g)
    hi = lo + 1e-3
    exact = copy.deepcopy(net).double()
    c, r = ((lo.double() + hi.double()) / 2), (hi.double() - lo.double()) / 2
    J = torch.autograd.functional.jacobian(lambda x: exact(x)[0], c)  # (outputs, 1, *shape)
    J = J.flatten(1)
    with torch.no_grad():
        mid = exact(c)[0]
    low, high = mid - J.abs() @ r.flatten(), mid + J.abs() @ r.flatten()
    b = compute_bounds(net, Box(lo, hi), "crown", dtype=torch.float32, fallback=False)
    assert (b.lower.double()[0] <= low).all() and (b.upper.double()[0] >= high).all()
    # the relaxation is exact: only the rounding bound (~2e-6 here; the range is ~5e-4 wide)
    assert (b.lower.double()[0] >= low - 1e-4).all() and (b.upper.double()[0] <= high + 1e-4).all()


class Twice(nn.Module):
    """One Linear module called twice on the same input (two nodes, possibly one operation)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.relu(self.fc(x)) - 0.5 * torch.relu(self.fc(x)))


def test_float32_crown_with_one_operation_at_two_nodes_contains_exact_outputs():
    torch.manual_seed(2)
    net = Twice().eval()
    with torch.no_grad():
        net.fc.bias -= 1000.0 * net.fc.weight.sum(1)
    g = torch.Generator().manual_seed(2)
    lo = 1000.0 + torch.rand(1, 6, generator=g)
    hi = lo + 1e-3
    out = _outputs(net, lo, hi, g)
    b = compute_bounds(net, Box(lo, hi), "crown", dtype=torch.float32, fallback=False)
    assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all()


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_gemm_is_the_transposed_convolutions_transpose(dim, groups):
    """The float32 route of ``ConvTranspose.backward`` where PyTorch might not compute the
    convolution as direct sums: unfold + matrix products, the same numbers as conv{1,2}d
    (float64, 1e-12)."""
    from robustlab.bounds.ops.shape import ConvTranspose, _conv_gemm

    g = torch.Generator().manual_seed(dim + 2 * groups)
    w = torch.randn(4, 6 // groups, *([3] * dim), generator=g, dtype=torch.float64)
    op = ConvTranspose(w, None, (2,) * dim, (1,) * dim, (0,) * dim, (2,) * dim, groups)
    x = torch.randn(5, 6, *([9] * dim), generator=g, dtype=torch.float64)
    f = nn.functional.conv2d if dim == 2 else nn.functional.conv1d
    ref = f(x, w, None, op.stride, op.padding, op.dilation, groups)
    assert torch.allclose(_conv_gemm(x, w, op), ref, rtol=0, atol=1e-12 * float(ref.abs().max()))

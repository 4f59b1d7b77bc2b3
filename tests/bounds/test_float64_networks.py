"""Networks computing in float64 behind an input cast (as the ACC networks of VNN-COMP do): the
bound graph traces them, and float32 passes over their float64 weights stay sound."""

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.bounds.graph import graph_of
from robustlab.threat import Box

from ..conftest import SHARED

ACC = SHARED / "benchmarks" / "vnnlib2" / "ACC"


class Float64Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Linear(3, 8).double()
        self.b = nn.Linear(8, 2).double()
        with torch.no_grad():  # weights float32 cannot represent
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / 3 + 1e-9)

    def forward(self, x):
        return self.b(torch.relu(self.a(x.double())))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_bounds_of_a_float64_network_contain_its_outputs(dtype, method):
    net = Float64Net().eval()
    graph_of(net, (3,))  # traced with the cast's dtype
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, generator=g)
    lo, hi = x - 0.3, x + 0.3
    pts = lo.double() + (hi - lo).double() * torch.rand(
        4000, 2, 3, generator=g, dtype=torch.float64
    )
    with torch.no_grad():
        y = net(pts.flatten(0, 1)).view(4000, 2, 2)
    b = compute_bounds(net, Box(lo, hi), method, dtype=dtype)
    assert (y >= b.lower.double()).all() and (y <= b.upper.double()).all()


@pytest.mark.skipif(not ACC.is_dir(), reason="shared vnnlib2/ACC not present")
def test_acc_instance_gets_a_replayed_verdict():
    from robustlab.verify import verify

    r = verify(
        ACC / "onnx" / "NET_0_1.5_5.onnx.gz",
        ACC / "vnnlib" / "v1" / "prop_outbounds.vnnlib.gz",
        timeout=30,
    )
    assert r.verdict in ("violated", "holds", "timeout"), r.message
    if r.verdict == "violated":  # re-checked by onnxruntime on the published network
        assert len(r.counterexample["x"]) == 3


class ConvBN(nn.Module):
    """A float32 conv net with batch norm: the bound graph folds the norm into float64 constants."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.c = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.3, 3.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.c(x))).flatten(1))


@pytest.mark.parametrize("make", [Float64Net, ConvBN])
def test_float32_bookkeeping_over_float64_weights_is_sound(make):
    """Linear / Conv / Affine budget one rounding of their weights (tracker._terms), so a float32
    pass covers float64 weights there (tracker.covers) and its bounds still contain the outputs."""
    from robustlab.bounds.tracker import covers

    net = make().eval()
    shape = (3,) if make is Float64Net else (1, 6, 6)
    assert covers(graph_of(net, shape))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, *shape, generator=g)
    lo, hi = x - 0.2, x + 0.2
    b = compute_bounds(net, Box(lo, hi), "crown", dtype=torch.float32, fallback=False)
    exact = make().eval().double()
    pts = lo.double() + (hi - lo).double() * torch.rand(
        3000, *x.shape, generator=g, dtype=torch.float64
    )
    with torch.no_grad():
        y = exact(pts.flatten(0, 1)).view(3000, 2, -1)
    assert (y >= b.lower.double()).all() and (y <= b.upper.double()).all()
    b64 = compute_bounds(net, Box(lo, hi), "crown")
    width = (b64.upper - b64.lower).double()
    assert ((b.upper.double() - b64.upper.double()) <= 1e-3 * width + 1e-6).all()

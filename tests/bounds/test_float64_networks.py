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

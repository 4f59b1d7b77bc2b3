"""Every rule of today's operator set is sound: bounds (IBP, CROWN, alpha-CROWN; float64 and
float32) contain 10^4 sampled outputs and a PGD attack per output (Linf and L2 regions),
evaluated in float64 on small random networks containing the rule (``rule_nets.py``).

``ROBUSTLAB_TEST_DEVICE=cuda`` computes the bounds on that device (``benchmarks/gpu_check.sh``);
the samples and the attack stay on the CPU in float64."""

import copy
import os

import pytest
import torch

from robustlab.attacks import PGD
from robustlab.bounds import compute_bounds
from robustlab.bounds.forward import forward_bounds, supported
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.threat import Box, LpBall

from .rule_nets import RULE_NETS, make

SLOW = {"encoder", "conv-transpose"}
DEVICE = torch.device(os.environ.get("ROBUSTLAB_TEST_DEVICE", "cpu"))


def _on_device(net, threat, x0):
    """The network, region and centre where the bounds are computed."""
    if DEVICE.type == "cpu":
        return net, threat, x0
    return copy.deepcopy(net).to(DEVICE), threat, x0.to(DEVICE)


def _points(net, threat, x0, g):
    """10^4 samples and, per output and sign, a PGD maximiser, all inside the region as the
    bounds take it (x0 +- eps in float64): the network's float64 outputs there."""
    x64 = x0.double()
    pts = threat.sample(x64, 5000, g)  # (5000, 2, ...)
    k = net(x0).shape[1]
    attacked = []
    for j in range(k):
        for sign in (1.0, -1.0):
            attack = PGD(steps=20, loss=lambda z, y, j=j, s=sign: s * z[:, j])
            adv = attack(net, x0, torch.zeros(len(x0), dtype=torch.long), threat)
            attacked.append(threat.project(x64, adv.double()))
    pts = torch.cat([pts, torch.stack(attacked)])
    exact = copy.deepcopy(net).double()
    with torch.no_grad():
        out = exact(pts.flatten(0, 1).double()).reshape(len(pts), len(x0), -1)
    return out


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in RULE_NETS]
)
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_rule_bounds_contain_sampled_and_attacked_outputs(name, norm):
    net, shape = make(name, 0)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, *shape, generator=g)
    threat = LpBall(norm, 0.3 if norm == "inf" else 0.6)
    out = _points(net, threat, x0, g)
    scale = 1e-9 * (1 + out.abs().amax())
    dev_net, dev_threat, dev_x0 = _on_device(net, threat, x0)
    for dtype in (torch.float64, torch.float32):
        for method in ("ibp", "crown", "alpha-crown"):
            b = compute_bounds(
                dev_net, (dev_threat, dev_x0), method, dtype=dtype, alpha_iterations=5
            )
            lo, hi = b.lower.double().cpu(), b.upper.double().cpu()
            assert (lo <= hi).all()
            tol = scale if dtype == torch.float64 else 0.0  # float32: rigorous, no tolerance
            assert (out >= lo - tol).all(), (method, dtype, float((lo - out).max()))
            assert (out <= hi + tol).all(), (method, dtype, float((out - hi).max()))


@pytest.mark.parametrize(
    "name", ["sin", "gelu", "gelu-tanh", "sign", "softmax", "layer-norm", "shapes"]
)
def test_float32_bounds_contain_exact_outputs_where_rounding_dominates(name):
    """Inputs near 1000 with a width of 1e-3 (the first layer's bias brings its outputs back to
    moderate values): float32 rounding exceeds the region's width, yet the float32 bounds contain
    the float64 outputs (the bookkeeping, or a float64 computation for operations outside it)."""
    net, shape = make(name, 4)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.bias -= 1000.0 * first.weight.sum(1)
    g = torch.Generator().manual_seed(4)
    lo = 1000.0 + torch.rand(1, *shape, generator=g)
    hi = lo + 1e-3
    pts = lo.double() + (hi - lo).double() * torch.rand(
        3000, *shape, generator=g, dtype=torch.float64
    )
    with torch.no_grad():
        out = copy.deepcopy(net).double()(torch.cat([pts, lo.double(), hi.double()]))
    for method in ("ibp", "crown", "alpha-crown"):
        b = compute_bounds(net, Box(lo, hi), method, dtype=torch.float32, alpha_iterations=5)
        assert b.lower.dtype == torch.float32
        assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all(), method


@pytest.mark.parametrize("name", [n for n in RULE_NETS if n not in SLOW])
def test_forward_linear_bounds_contain_sampled_outputs(name):
    """Forward bounds (input splitting's intermediate bounds) through every rule that has one."""
    net, shape = make(name, 5)
    graph = graph_of(net, shape)
    if not supported(graph):
        pytest.skip("matrix products, amax: no forward rule")
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, *shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        b = forward_bounds(graph, InputRegion(x0 - 0.2, x0 + 0.2))[graph.output]
        pts = x0 + 0.4 * torch.rand(5000, *x0.shape, generator=g, dtype=torch.float64) - 0.2
        out = copy.deepcopy(net).double()(pts.flatten(0, 1)).reshape(5000, 2, -1)
    lo, hi = b.lower.reshape(1, 2, -1), b.upper.reshape(1, 2, -1)
    assert (out >= lo - 1e-9).all() and (out <= hi + 1e-9).all()

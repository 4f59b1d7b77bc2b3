"""Every rule of today's operator set is sound: bounds (IBP, CROWN, alpha-CROWN; float64 and
float32) contain 10^4 sampled outputs and a PGD attack per output (Linf and L2 regions),
evaluated in float64 on small random networks containing the rule (``rule_nets.py``)."""

import copy

import pytest
import torch

from robustlab.attacks import PGD
from robustlab.bounds import compute_bounds
from robustlab.threat import LpBall

from .rule_nets import RULE_NETS, make

SLOW = {"encoder", "attention", "conv-transpose"}


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
    for dtype in (torch.float64, torch.float32):
        for method in ("ibp", "crown", "alpha-crown"):
            b = compute_bounds(net, (threat, x0), method, dtype=dtype, alpha_iterations=5)
            lo, hi = b.lower.double(), b.upper.double()
            assert (lo <= hi).all()
            tol = scale if dtype == torch.float64 else 0.0  # float32: rigorous, no tolerance
            assert (out >= lo - tol).all(), (method, dtype, float((lo - out).max()))
            assert (out <= hi + tol).all(), (method, dtype, float((out - hi).max()))

"""Every method's bounds contain sampled and attacked outputs, per output and for random C."""

import copy

import pytest
import torch

from robustlab.attacks import PGD
from robustlab.bounds import METHODS, compute_bounds, rounding
from robustlab.threat import Box, LpBall

from .nets import KINDS, make

TOL = 1e-5


def _outputs(net, pts, shape):
    with torch.no_grad():
        return net(pts.reshape(-1, *shape)).reshape(pts.shape[0], pts.shape[1], -1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_contain_sampled_and_attacked_outputs(kind, seed):
    net, shape = make(kind, seed)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, *shape, generator=g)
    threat = LpBall("inf", 0.2)
    pts = threat.sample(x0, 5000, g)  # 10,000 points in all
    out = _outputs(net, pts, shape)
    k = out.shape[-1]
    C = torch.randn(2, 3, k, generator=g)
    spec_out = torch.einsum("bmk,nbk->nbm", C, out)
    # attacked points: PGD pushing every output up and down
    attacked = []
    for j in range(k):
        for sign in (1.0, -1.0):
            adv = PGD(steps=30, loss=lambda z, y, j=j, s=sign: s * z[:, j])(
                net, x0, torch.zeros(2, dtype=torch.long), threat
            )
            attacked.append(net(adv).detach())
    attacked = torch.stack(attacked)
    widths = {}
    for method in METHODS:
        b = compute_bounds(net, (threat, x0), method)
        assert (b.lower <= b.upper).all()
        assert (out >= b.lower - TOL).all() and (out <= b.upper + TOL).all(), method
        assert (attacked >= b.lower - TOL).all() and (attacked <= b.upper + TOL).all(), method
        bc = compute_bounds(net, (threat, x0), method, C=C)
        assert (spec_out >= bc.lower - TOL).all() and (spec_out <= bc.upper + TOL).all(), method
        widths[method] = (b.upper - b.lower).sum().item()
    # tighter methods are never looser (small slack for rounding)
    assert widths["crown"] <= widths["ibp"] + 1e-6
    assert widths["alpha-crown"] <= widths["crown"] + 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_float32_bounds_are_sound_too(kind):
    net, shape = make(kind, 3)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(1, *shape, generator=g)
    threat = LpBall("inf", 0.1)
    b = compute_bounds(net, (threat, x0), "crown", dtype=torch.float32)
    out = _outputs(net, threat.sample(x0, 3000, g), shape)
    assert (out >= b.lower).all() and (out <= b.upper).all()


def test_intermediate_bounds_are_returned_and_sound():
    net, shape = make("mlp", 0)
    x0 = torch.rand(1, *shape)
    threat = LpBall("inf", 0.1)
    res = compute_bounds(net, (threat, x0), "crown", return_intermediate=True)
    hidden = net[:3](
        threat.sample(x0, 2000)[:, 0]
    )  # after Flatten, Linear, ReLU... pre-activation of node 2
    pre = net[:2](threat.sample(x0, 2000)[:, 0])
    b = res.intermediate[2]
    assert torch.equal(res.lower, compute_bounds(net, (threat, x0), "crown").lower)
    assert (pre >= b.lower - TOL).all() and (pre <= b.upper + TOL).all()
    assert hidden.shape[1] == 16


def test_batched_regions_match_single_regions():
    net, shape = make("cnn", 1)
    x0 = torch.rand(4, *shape)
    threat = LpBall("inf", 0.05)
    batched = compute_bounds(net, (threat, x0), "crown")
    for i in range(4):
        single = compute_bounds(net, (threat, x0[i : i + 1]), "crown")
        assert torch.allclose(batched.lower[i], single.lower[0], atol=1e-9)
        assert torch.allclose(batched.upper[i], single.upper[0], atol=1e-9)


@pytest.mark.parametrize("kind", ["mlp", "residual", "cnn"])
def test_l2_ball_bounds_are_sound_and_use_the_dual_norm(kind):
    net, shape = make(kind, 5)
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, *shape, generator=g) * 0.5 + 0.25
    ball = LpBall("2", 0.3)
    out = _outputs(net, ball.sample(x0, 4000, g), shape)
    for method in METHODS:
        b = compute_bounds(net, (ball, x0), method)
        assert (out >= b.lower - TOL).all() and (out <= b.upper + TOL).all(), method
    box_only = compute_bounds(net, (LpBall("inf", 0.3), x0), "crown")
    l2 = compute_bounds(net, (ball, x0), "crown")
    assert (l2.upper - l2.lower).sum() < (box_only.upper - box_only.lower).sum()


@pytest.mark.parametrize("kind", ["mlp", *KINDS[1:]])
def test_float32_bounds_contain_exact_outputs_where_rounding_dominates(kind):
    """Inputs near 1000 with a width of 1e-3 and large biases: float32 rounding is larger than
    the bounds' width. Outputs evaluated exactly (float64 copy of the float32 weights) stay
    inside every method's float32 bounds; without the rounding accounting they do not."""
    unsound_without = 0
    for seed in range(4):
        torch.manual_seed(seed)
        if kind == "mlp":
            net = torch.nn.Sequential(
                torch.nn.Linear(8, 32),
                torch.nn.ReLU(),
                torch.nn.Linear(32, 32),
                torch.nn.ReLU(),
                torch.nn.Linear(32, 3),
            ).eval()
            with torch.no_grad():
                net[0].bias.uniform_(-3000, 3000)
            shape = (8,)
        else:
            net, shape = make(kind, seed)
        exact = copy.deepcopy(net).double()
        g = torch.Generator().manual_seed(seed)
        lo = 1000.0 + torch.rand(1, *shape, generator=g)
        hi = lo + 1e-3
        pts = lo.double() + (hi - lo).double() * torch.rand(3000, *shape, generator=g).double()
        with torch.no_grad():
            out = exact(torch.cat([pts, lo.double(), hi.double()]))
        for method in METHODS:
            b = compute_bounds(net, Box(lo, hi), method, dtype=torch.float32)
            assert b.lower.dtype == torch.float32
            assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all(), method
            with rounding.ignored():
                naive = compute_bounds(net, Box(lo, hi), method, dtype=torch.float32)
            unsound_without += not bool(
                (out >= naive.lower.double()).all() and (out <= naive.upper.double()).all()
            )
    if kind == "mlp":
        assert unsound_without > 0  # the test has teeth


@pytest.mark.parametrize("kind", KINDS)
def test_float32_bounds_are_close_to_float64(kind):
    """The rounding terms scale with the intervals' widths: float32 CROWN bounds stay within 1%
    of the float64 ones (alpha-CROWN 3%: its float32 iterations are not bookkept, only the last)."""
    net, shape = make(kind, 7)
    x0 = torch.rand(2, *shape, generator=torch.Generator().manual_seed(7))
    for eps in (0.2, 1 / 255):
        for method in ("crown", "alpha-crown"):
            b32 = compute_bounds(net, (LpBall("inf", eps), x0), method, dtype=torch.float32)
            b64 = compute_bounds(net, (LpBall("inf", eps), x0), method)
            w32 = (b32.upper - b32.lower).double()
            w64 = (b64.upper - b64.lower).double()
            slack = 1.01 if method == "crown" else 1.03  # alpha: one bookkept final pass
            assert (w32 <= w64 * slack + 1e-6).all(), (method, eps, (w32 / w64).max())

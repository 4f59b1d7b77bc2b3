"""Certified training bounds from the bound engine: sound, differentiable in the parameters, and
following the live weights after an optimiser step."""

import math

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.bounds.graph import build_graph
from robustlab.bounds.ibp import interval_all, spec_bounds
from robustlab.errors import RobustlabError
from robustlab.train.certified import check_trainable, full_margin_spec, margin_lower_bounds
from robustlab.train.init import ibp_init


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _hand_ibp(model: nn.Sequential, lo, hi, y):
    """Interval bounds written out for the zoo MLP, margins by the folded last layer."""
    lo, hi = lo.flatten(1), hi.flatten(1)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    for k, layer in enumerate(layers[:-1]):
        c, r = (hi + lo) / 2, (hi - lo) / 2
        c, r = c @ layer.weight.T + layer.bias, r @ layer.weight.abs().T
        lo, hi = (c - r).relu(), (c + r).relu()
        assert k < 2
    last = layers[-1]
    W = last.weight[y][:, None, :] - last.weight[None, :, :]  # (N, K, H)
    b = last.bias[y][:, None] - last.bias[None, :]
    c, r = (hi + lo) / 2, (hi - lo) / 2
    return (W @ c[:, :, None])[..., 0] - (W.abs() @ r[:, :, None])[..., 0] + b


def test_ibp_margins_and_gradients_match_hand_computation():
    torch.manual_seed(0)
    model = zoo.build("mlp")
    x, y = _batch()
    lo, hi = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    ours = margin_lower_bounds(model, lo, hi, y, 10)
    ref = _hand_ibp(model, lo, hi, y)
    assert torch.allclose(ours, ref, atol=1e-5)
    g1 = torch.autograd.grad(ours.sum(), list(model.parameters()))
    g2 = torch.autograd.grad(ref.sum(), list(model.parameters()))
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gradients_reach_every_parameter_and_steps_are_seen(arch, beta):
    torch.manual_seed(1)
    model = zoo.build(arch)
    x, y = _batch()
    lo, hi = (x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1)
    lb = margin_lower_bounds(model, lo, hi, y, 10, beta=beta)
    nn.functional.cross_entropy(-lb, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    torch.optim.Adam(model.parameters(), lr=0.05).step()
    after = margin_lower_bounds(model, lo, hi, y, 10, beta=beta)  # the cached graph
    fresh = build_graph(model, (1, 8, 8))  # a graph built from the updated weights
    C = full_margin_spec(y, 10, lo)
    fresh_ibp = spec_bounds(fresh, dict(enumerate(interval_all(fresh, lo, hi))), C).lower
    assert not torch.allclose(after, lb)
    if beta == 0.0:
        assert torch.allclose(after, fresh_ibp, atol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_margin_bounds_are_sound(beta):
    torch.manual_seed(2)
    model = zoo.build("mlp")
    x, y = _batch(8)
    eps = 0.03
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    with torch.no_grad():
        lb = margin_lower_bounds(model, lo, hi, y, 10, beta=beta)
        pts = lo + (hi - lo) * torch.rand(500, *x.shape)
        out = model(pts.flatten(0, 1)).view(500, len(x), 10)
        margins = out.gather(2, y.view(1, -1, 1).expand(500, -1, 1)) - out
    assert (margins >= lb - 1e-5).all()
    assert (lb.gather(1, y[:, None]) == 0).all()


def test_ibp_init_scale():
    model = ibp_init(zoo.build("mlp"), generator=torch.Generator().manual_seed(0))
    w = model[1].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 * math.pi) / 64, rel=0.05)
    assert (model[1].bias == 0).all()


def test_batchnorm_is_refused():
    with pytest.raises(RobustlabError, match="BatchNorm"):
        check_trainable(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10)))

"""Lipschitz estimates and bounds: layer norms against explicit matrices, the global bound
against sampled slopes, and certified radii against attacks."""

import math

import pytest
import torch
from torch import nn

from robustlab.errors import UnsupportedOperation
from robustlab.explain.lipschitz import jacobian_spectral_norm, lipschitz_radius, local_lipschitz
from robustlab.explain.spectral import conv2d_norm, global_lipschitz, linear_norm, module_norm


def explicit_norm(layer: nn.Module, shape) -> float:
    n = math.prod(shape)
    layer = layer.double()
    eye = torch.eye(n, dtype=torch.float64).view(n, *shape)
    with torch.no_grad():
        mat = (layer(eye) - layer(torch.zeros(1, *shape, dtype=torch.float64))).reshape(n, -1)
    return torch.linalg.matrix_norm(mat, ord=2).item()


@pytest.mark.parametrize(
    "kw",
    [
        {"padding": 1},
        {"padding": 0},
        {"stride": 2, "padding": 1},
        {"dilation": 2, "padding": 2},
        {"groups": 2, "padding": 1},
        {"padding": "same"},
    ],
)
def test_conv_norm_bounds_the_explicit_matrix(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **kw)
    bound = conv2d_norm(conv, (4, 7, 9))
    exact = explicit_norm(conv, (4, 7, 9))
    assert exact <= bound
    if "stride" not in kw:
        assert bound < 1.2 * exact  # the circular embedding is nearly tight without stride


def test_linear_norm_is_exact():
    w = torch.randn(7, 5)
    assert abs(linear_norm(w) - torch.linalg.svdvals(w.double())[0].item()) < 1e-5


@pytest.mark.parametrize(
    "layer", [nn.MaxPool2d(3, 2), nn.MaxPool2d(2), nn.AvgPool2d(3, 1), nn.AvgPool2d(2)]
)
def test_pool_norms_bound_slopes(layer):
    bound = module_norm(layer, (2, 8, 8))
    if isinstance(layer, nn.AvgPool2d):
        assert explicit_norm(layer, (2, 8, 8)) <= bound
    torch.manual_seed(0)
    x = torch.randn(2000, 2, 8, 8, dtype=torch.float64)
    y = x + 1e-3 * torch.randn_like(x)
    slope = (layer(x) - layer(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert slope.max() <= bound


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64, 10)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.bn.running_mean.uniform_(-1, 1)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = h + 0.5 * torch.relu(self.inner(h))
        return self.fc(self.pool(h).flatten(1))


@pytest.mark.parametrize("model", ["cnn", "reused", "residual"])
def test_global_bound_holds(model, request, digits):
    net = Residual().eval() if model == "residual" else request.getfixturevalue(model)
    bound = global_lipschitz(net, (1, 8, 8)).bound
    x = digits.x[:40]
    sigma = jacobian_spectral_norm(net, x)
    assert (sigma <= bound).all()
    torch.manual_seed(1)
    d = torch.randn_like(x)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 0.3
    with torch.no_grad():
        slope = (net(x + d) - net(x)).norm(dim=1) / 0.3
    assert (slope <= bound).all()


def test_jacobian_spectral_norm_is_the_top_singular_value(cnn, digits):
    x = digits.x[:4]
    sigma = jacobian_spectral_norm(cnn, x, n_iter=50)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda z: cnn(z.unsqueeze(0))[0], x[i])
        exact = torch.linalg.matrix_norm(jac.reshape(10, -1), ord=2)
        assert torch.allclose(sigma[i], exact, rtol=1e-3)


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(UnsupportedOperation, match="LayerNorm"):
        global_lipschitz(net, (1, 8, 8))


def _attack_l2(net, x, y, radius, steps=60):
    """PGD on the margin inside per-sample L2 balls; returns whether any point flips."""
    delta = torch.zeros_like(x, requires_grad=True)
    r = radius.float().view(-1, 1, 1, 1)
    for _ in range(steps):
        logits = net(x + delta)
        other = logits.clone()
        other[torch.arange(len(y)), y] = -math.inf
        margin = logits[torch.arange(len(y)), y] - other.amax(1)
        (g,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta -= 0.1 * r * g
            n = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta *= torch.where(n > r, r / n.clamp_min(1e-12), 1.0)
    with torch.no_grad():
        return net(x + delta).argmax(1) != y


@pytest.mark.parametrize("model", ["cnn", "residual"])
def test_certified_radius_is_never_broken(model, request, digits):
    net = Residual().eval() if model == "residual" else request.getfixturevalue(model)
    x = digits.x[:60]
    with torch.no_grad():
        y = net(x).argmax(1)
    cert = lipschitz_radius(net, x, y)
    assert cert.certified and cert.method == "global"
    assert (cert.radius > 0).all()
    assert not _attack_l2(net, x, y, cert.radius).any()
    # the attack itself works: at 40x the certified radius it breaks some points
    assert _attack_l2(net, x, y, 40 * cert.radius).any()
    local = lipschitz_radius(net, x, y, method="local")
    assert not local.certified and (local.radius > 0).all()
    assert local.to_dict()["certified"] is False


def test_misclassified_points_get_radius_zero(cnn, digits):
    x = digits.x[:20]
    wrong = (cnn(x).argmax(1) + 1) % 10
    assert (lipschitz_radius(cnn, x, wrong).radius == 0).all()


def test_local_lipschitz(cnn, digits):
    x = digits.x[:6]
    res = local_lipschitz(cnn, x, 0.1, "2", target=3, n_samples=16)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(cnn(xg)[:, 3].sum(), xg)
    at_x = g.flatten(1).norm(dim=1).double()
    assert (res.estimate >= at_x - 1e-6).all() and (res.mean <= res.estimate).all()
    assert (res.estimate <= global_lipschitz(cnn, (1, 8, 8)).bound).all()
    assert res.n_forward == 6 * 17 and res.n_backward == 6 * 17
    linf = local_lipschitz(cnn, x, 0.1, "inf", target=3, n_samples=4)
    assert (linf.estimate >= g.flatten(1).abs().sum(1).double() - 1e-5).all()

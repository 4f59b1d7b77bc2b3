import pytest
import torch
from torch import nn

from robustlab.attacks import PGD, run_attack
from robustlab.bounds import certify, compute_bounds, ibp, margin_spec
from robustlab.errors import UnsupportedOperation
from robustlab.threat import Box, LpBall


def test_all_ones_linear_layer_by_hand():
    lin = nn.Linear(3, 1)
    nn.init.ones_(lin.weight)
    nn.init.zeros_(lin.bias)
    b = compute_bounds(lin, Box(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 3.0, 4.0]])))
    assert b.lower.item() == 3.0 and b.upper.item() == 9.0
    b = ibp(lin, torch.tensor([[1.0, 2.0, 3.0]]) - 1, torch.tensor([[1.0, 2.0, 3.0]]) + 1)
    assert b.lower.item() == 3.0 and b.upper.item() == 9.0


def test_relu_and_conv_by_hand():
    conv = nn.Conv2d(1, 1, 2, bias=False)
    conv.weight.data = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten())
    lo, hi = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    b = ibp(net, lo, hi)
    assert b.lower.item() == 0.0 and b.upper.item() == 3.0


def _random_net(kind: str, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4)
        ), (6,)
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, groups=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16, 3),
        ), (2, 5, 5)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

        def forward(self, x):
            h = torch.relu(self.a(x)) + x * 0.5 - 0.1
            return self.b(h.view(h.size(0), -1))

    return Residual(), (5,)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "residual"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ibp_contains_sampled_and_attacked_outputs(kind, seed):
    net, shape = _random_net(kind, seed)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, *shape, generator=g)
    threat = LpBall("inf", 0.15)
    lo, hi = threat.box(x0)
    b = ibp(net, lo, hi)
    pts = threat.sample(x0, 5000, g)  # 10,000 points in all
    with torch.no_grad():
        out = net(pts.reshape(-1, *shape)).reshape(5000, 2, -1)
    assert (out >= b.lower - 1e-5).all() and (out <= b.upper + 1e-5).all()
    k = out.shape[-1]
    C = torch.randn(2, 4, k, generator=g)
    bc = ibp(net, lo, hi, C=C)
    spec_out = torch.einsum("bmk,nbk->nbm", C, out)
    assert (spec_out >= bc.lower - 1e-5).all() and (spec_out <= bc.upper + 1e-5).all()
    for j in range(k):  # PGD pushing each output up and down
        for sign in (1.0, -1.0):
            adv = PGD(steps=20, loss=lambda z, y, j=j, s=sign: s * z[:, j])(
                net, x0, torch.zeros(2, dtype=torch.long), threat
            )
            v = net(adv)[:, j].detach()
            assert (v >= b.lower[:, j] - 1e-5).all() and (v <= b.upper[:, j] + 1e-5).all()


def test_margin_spec():
    C = margin_spec(torch.tensor([1]), 3)
    assert C.tolist() == [[[-1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]]


def test_certified_never_exceeds_robust(mlp, digits):
    data = digits.subset(150)
    for eps in (0.005, 0.01, 0.02):
        threat = LpBall("inf", eps)
        cert = torch.tensor(certify(mlp, data, threat).certified)
        robust = torch.tensor(run_attack(mlp, data, threat, PGD(steps=20)).robust)
        assert not (cert & ~robust).any()


def test_unsupported_operation_is_named():
    net = nn.Sequential(nn.Linear(3, 3), nn.Softplus())
    with pytest.raises(UnsupportedOperation, match="Softplus"):
        ibp(net, torch.zeros(1, 3), torch.ones(1, 3))

"""The global Lipschitz bound and its certificate: hand-computable networks, sampled slopes never
above the bound, certified points never broken by PGD-L2 with restarts (and the attack breaks
uncertified ones), the Linf consequence, refusals with their reason, and ``certify --method
lipschitz`` from the command line."""

import json
import math

import pytest
import torch
from torch import nn

from robustlab.attacks import PGD, run_attack
from robustlab.bounds import CERTIFY_METHODS, certify, global_lipschitz, l2_radius
from robustlab.data import Dataset
from robustlab.errors import RobustlabError, UnsupportedOperation
from robustlab.threat import Box, LpBall

from ..conftest import run_cli


def linear(weight) -> nn.Linear:
    w = torch.as_tensor(weight, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.fill_(0.5)
    return layer


class Residual(nn.Module):
    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return x + self.scale * torch.relu(self.inner(x))


class Twice(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1) + 0 * x.sum()  # the same input twice: sqrt(2)


def near(value: float, exact: float) -> bool:
    return exact <= value <= exact * (1 + 1e-9)


@pytest.mark.parametrize(
    "net, shape, exact",
    [
        (nn.Sequential(linear([[3.0, 0], [0, 2.0]])), (2,), 3.0),
        (nn.Sequential(linear([[3.0, 0], [0, 2.0]]), nn.Sigmoid()), (2,), 0.75),
        (nn.Sequential(linear([[3.0, 4.0]]), nn.ReLU(), linear([[2.0]])), (2,), 10.0),
        (nn.Sequential(Residual(linear([[0.0, 1.0], [1.0, 0.0]]), 2.0)), (2,), 3.0),
        (nn.Sequential(nn.AvgPool2d(2)), (1, 4, 4), 0.5),
        (nn.Sequential(nn.MaxPool2d(3, 2)), (1, 7, 7), 2.0),
        (nn.Sequential(Twice()), (3,), math.sqrt(2)),
    ],
)
def test_hand_computable_networks(net, shape, exact):
    assert near(global_lipschitz(net.eval(), shape).bound, exact)


def test_batchnorm_and_constant_scaling():
    bn = nn.BatchNorm1d(2).eval()
    bn.running_var.copy_(torch.tensor([0.25, 4.0]))
    bn.weight.data.copy_(torch.tensor([1.5, -8.0]))
    assert near(global_lipschitz(nn.Sequential(bn), (2,)).bound, 4.0 / math.sqrt(1 + 1e-5 / 4))


def test_bound_holds_on_sampled_slopes(mlp, digits):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    net[1].running_var.uniform_(0.5, 2.0)
    for model in (mlp, net):
        bound = global_lipschitz(model, (1, 8, 8)).bound
        x = digits.x[:200]
        d = torch.randn_like(x)
        d = 1e-2 * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        with torch.no_grad():
            slope = (model(x + d) - model(x)).norm(dim=1) / 1e-2
        assert slope.max() <= bound


def test_unsupported_and_bad_input():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(UnsupportedOperation, match="LayerNorm.*supported"):
        global_lipschitz(net, (1, 8, 8))

    class Square(nn.Module):
        def forward(self, x):
            return x.flatten(1) * x.flatten(1)

    with pytest.raises(UnsupportedOperation, match="constant"):
        global_lipschitz(Square(), (1, 8, 8))
    data = Dataset("d", torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(RobustlabError, match="Lp ball"):
        certify(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), data,
                Box(torch.zeros(1, 8, 8), torch.ones(1, 8, 8)), "lipschitz")  # fmt: skip


def test_certified_points_are_never_broken_by_pgd_l2(mlp, digits):
    """The acceptance's soundness test on the zoo MLP (L about 10^1): at several radii, no point
    certified at that radius is broken by PGD-L2 with restarts, which breaks others."""
    data = digits.subset(300)
    radii = l2_radius(mlp, data.x, data.y)
    assert radii.lipschitz.bound > 1 and (radii.radius > 0).sum() > 100
    broke_some = False
    for eps in torch.quantile(
        radii.radius[radii.radius > 0], torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    ):
        threat = LpBall("2", float(eps))
        cert = radii.certified("2", float(eps), 64)
        assert cert.tolist() == certify(mlp, data, threat, "lipschitz").certified
        adv = run_attack(mlp, data, threat, PGD(steps=50, restarts=3, loss="margin"))
        robust = torch.tensor(adv.robust)
        assert not (cert & ~robust).any()
        broke_some |= bool((~robust).any())
        # 4x the radius: the attack is strong enough to break what is not certified
        far = run_attack(mlp, data, LpBall("2", 4 * float(eps)), PGD(steps=50, restarts=3))
        broke_some |= bool((~torch.tensor(far.robust) & cert).any())
    assert broke_some


def test_linf_consequence(mlp, digits):
    data = digits.subset(100)
    radii = l2_radius(mlp, data.x, data.y)
    eps = float(radii.radius.max()) / 8 * 0.9  # some points certified: sqrt(64) = 8
    res = certify(mlp, data, LpBall("inf", eps), "lipschitz")
    assert res.certified == (radii.radius > 8 * eps).tolist() and res.certified_accuracy > 0


def test_certify_command(tmp_path, monkeypatch, capsys):
    assert "lipschitz" in CERTIFY_METHODS
    out = tmp_path / "c.json"
    code, text, err = run_cli(
        monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data", "digits", "--n", "50",
        "--eps", "0.05,0.2", "--norm", "2", "--method", "lipschitz,crown", "--out", out,
        "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    per = {(r["method"], r["eps"]): r["certified_accuracy"] for r in report["per_method"]}
    bounds = [r.get("lipschitz") for r in report["per_method"]]
    assert bounds[0] > 1 and bounds[1] is None  # the computed L, for the lipschitz rows only
    assert per[("lipschitz", 0.05)] >= per[("lipschitz", 0.2)]
    assert report["curve"][0]["certified_accuracy"] >= per[("lipschitz", 0.05)]

"""The rapid suite's last stages: random restarts side by side (``Restarts``) and the ensemble
running them only on the points that came close to the boundary (``Close``)."""

import torch
from torch import nn

from robustlab.attacks import APGD, Restarts, evaluate
from robustlab.attacks.base import margins
from robustlab.data import Dataset
from robustlab.threat import LpBall


class Needle(nn.Module):
    """Two classes; class 1 wins only in the corner x0 + x1 > 1.12 of the box [0.4, 0.6]^2
    around (0.5, 0.5) (8% of it), and the gradient is zero elsewhere: only a random start in
    the corner breaks the point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1, keepdim=True)
        one = 100 * torch.relu(s - 1.12) - 1e-3
        return torch.cat([torch.zeros_like(one), one], 1)


def test_restarts_break_a_point_that_one_random_start_rarely_breaks():
    model = Needle()
    x, y = torch.full((1, 2), 0.5), torch.zeros(1, dtype=torch.long)
    threat = LpBall("inf", 0.1)
    singles = [APGD(n_iter=10, seed=s)(model, x, y, threat) for s in range(10)]
    assert sum(int(model(a).argmax(1)) for a in singles) <= 3  # one start: ~8%
    adv = Restarts(n_iter=10, copies=48, seed=0)(model, x, y, threat)
    assert threat.contains(x, adv).all() and int(model(adv).argmax(1)) == 1


def _linear():
    """z_1 - z_0 = x0 + x1 - 1.0: an Linf distance (1 - x0 - x1) / 2 to the boundary."""
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.0, -1.0]))
    return lin.eval()


def test_close_stages_attack_only_the_points_near_the_boundary():
    """At eps 0.1, a point at distance 0.102 ends with a margin 2% of its clean one (close: the
    last stages attack it), a point at distance 0.3 with 67% (not attacked); both robust."""
    model = _linear()
    x = torch.tensor([[0.398, 0.398], [0.2, 0.2]])
    data = Dataset("two", x, torch.zeros(2, dtype=torch.long))
    res = evaluate(model, data, [0.1], "inf", suite="rapid", checks=False, skip_certified=False)
    assert res.robust_accuracy == 1.0
    attacked = {r["attack"]: r["n_attacked"] for r in res.per_attack}
    assert attacked == {"apgd-ce": 2, "fab-malt": 1, "restarts": 1}
    m = margins(model, x, data.y)
    assert m[0] < m[1]


def test_close_stages_break_what_they_reach():
    """A point at distance 0.099 is broken (by APGD-CE already; the last stages then have
    nothing to do there)."""
    model = _linear()
    x = torch.tensor([[0.401, 0.401]])
    data = Dataset("one", x, torch.zeros(1, dtype=torch.long))
    res = evaluate(model, data, [0.1], "inf", suite="rapid", checks=False, skip_certified=False)
    assert res.robust_accuracy == 0.0
    assert res.x_adv[0].sub(x).abs().max() <= 0.1 + 1e-6

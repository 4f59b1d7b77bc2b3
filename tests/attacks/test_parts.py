"""Unit checks of the pieces: FAB's projection, Square's schedule, APGD's checkpoints, losses."""

import pytest
import torch

from robustlab.attacks import APGDT, FABT, Square, run_attack
from robustlab.attacks.apgd import checkpoint_lengths
from robustlab.attacks.base import dlr_loss, dlr_targeted_loss, target_ranking
from robustlab.attacks.fab import hyperplane_projection
from robustlab.attacks.square import eta, p_selection
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall
from tests.attacks.nets import interior_points, linear_classifier, minimal_distance


def _sorted_projection(t, w, b, lo, hi, norm):
    """An independent oracle: sort the breakpoints of the piecewise-linear gain."""
    r = (w * t).sum(1) - b
    w = w * torch.where(r >= 0, 1.0, -1.0)[:, None]
    r = r.abs()[:, None]
    room = torch.where(w > 0, t - lo, hi - t).clamp_min(0)
    aw = w.abs()
    knee = room if norm == "inf" else torch.where(aw > 0, room / aw.clamp_min(1e-30), 0.0)
    e = aw if norm == "inf" else aw * aw
    ks, order = knee.sort(1)
    es = e.gather(1, order)
    ce, cc = es.cumsum(1), (es * ks).cumsum(1)
    gain = cc + ks * (ce[:, -1:] - ce)
    k = torch.searchsorted(gain.contiguous(), r.contiguous())
    kk = (k - 1).clamp_min(0)
    pc = torch.where(k > 0, cc.gather(1, kk), 0.0)
    pe = torch.where(k > 0, ce.gather(1, kk), 0.0)
    lam = torch.where(k < gain.shape[1], (r - pc) / (ce[:, -1:] - pe).clamp_min(1e-30), torch.inf)
    move = torch.minimum(lam if norm == "inf" else lam * aw, room)
    return torch.where(aw > 0, -torch.sign(w) * move, 0.0)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_hyperplane_projection(norm):
    gen = torch.Generator().manual_seed(0)
    t = (torch.rand(200, 30, generator=gen) > 0.4) * torch.rand(200, 30, generator=gen)
    w = torch.randn(200, 30, generator=gen) * (torch.rand(200, 30, generator=gen) > 0.2)
    b = (w * t).sum(1) + torch.randn(200, generator=gen)
    d = hyperplane_projection(t, w, b, 0.0, 1.0, norm)
    ref = _sorted_projection(t, w, b, 0.0, 1.0, norm)
    assert torch.allclose(d, ref, atol=1e-5)
    z = t + d
    assert (z >= -1e-6).all() and (z <= 1 + 1e-6).all()
    reachable = (w.clamp(min=0) * 1.0).sum(1) >= b  # the box reaches the hyperplane
    reachable &= (w.clamp(max=0) * 1.0).sum(1) <= b
    assert torch.allclose((w * z).sum(1)[reachable], b[reachable], atol=1e-4)


def test_hyperplane_projection_is_the_plain_projection_inside_the_box():
    t = torch.full((1, 4), 0.5)
    w = torch.tensor([[1.0, -2.0, 0.0, 1.0]])
    b = torch.tensor([0.1])  # w.t = 0 -> move by 0.1 towards the plane
    d = hyperplane_projection(t, w, b, 0.0, 1.0, "2")
    assert torch.allclose(d, 0.1 * w / (w * w).sum())
    d = hyperplane_projection(t, w, b, 0.0, 1.0, "inf")
    assert torch.allclose(d, 0.1 / 4 * torch.sign(w))


def test_square_schedule_and_eta():
    assert p_selection(0.8, 0, 5000, False) == 0.8
    assert p_selection(0.8, 11, 5000, False) == 0.4
    assert p_selection(0.8, 9000, 10000, False) == 0.8 / 512
    assert p_selection(0.8, 1000, 1000, True) == 0.8 / 512
    e = eta(5)
    assert e.shape == (5, 5) and abs(float(e.norm()) - 1) < 1e-6
    assert (e[:2] > 0).all() and (e[2:] < 0).all()


class _Flat(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, z):
        return self.lin(z.flatten(1))


def test_square_is_black_box_and_breaks_a_linear_model():
    lin = linear_classifier(d=64, k=4)
    x = interior_points(100, 64)
    y = lin(x).argmax(1)
    net = _Flat(lin)
    for norm, eps, q in (("inf", 0.03, 1000), ("2", 0.15, 300)):
        dist = minimal_distance(lin, x, y, norm)
        data = Dataset("lin", x.view(100, 1, 8, 8), y)
        res = run_attack(net, data, LpBall(norm, eps), Square(n_queries=q))
        broken = ~torch.tensor(res.robust)
        assert res.n_backward == 0
        assert broken[dist < eps / 2].all() and not broken[dist > eps].any()
        if norm == "inf":  # the optimum of a linear model is a vertex: Square reaches it
            assert broken[dist < 0.98 * eps].all()


def test_apgd_checkpoints_follow_autoattack():
    assert checkpoint_lengths(100) == (22, 3, 6)
    assert checkpoint_lengths(10) == (2, 1, 1)


def test_losses_and_target_ranking():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0], [0.0, 4.0, 1.0, 2.0, 3.0]])
    y = torch.tensor([0, 2])
    assert target_ranking(logits, y).tolist() == [[2, 1, 3, 4], [1, 4, 3, 0]]
    assert torch.allclose(dlr_loss(logits, y), torch.tensor([(2 - 3) / (3 - 1), (4 - 1) / (4 - 2)]))
    t = torch.tensor([2, 1])
    expected = torch.tensor([(2 - 3) / (3 - 0.5 * (1 + 0)), (4 - 1) / (4 - 0.5 * (2 + 1))])
    assert torch.allclose(dlr_targeted_loss(logits, y, t), expected)


def test_targeted_losses_need_enough_classes():
    lin = linear_classifier(d=4, k=3)
    x = interior_points(5, 4)
    y = lin(x).argmax(1)
    with pytest.raises(RobustlabError, match="at least 4 classes"):
        APGDT(n_iter=2)(lin, x, y, LpBall("inf", 0.1))


@pytest.mark.parametrize("parallel", [True, False])
def test_targets_side_by_side_or_in_sequence(parallel):
    lin = linear_classifier(d=10, k=5)
    x = interior_points(60, 10)
    y = lin(x).argmax(1)
    threat = LpBall("inf", 0.1)
    dist = minimal_distance(lin, x, y, "inf")
    for attack in (APGDT(n_iter=20, parallel=parallel), FABT(n_iter=20, parallel=parallel)):
        x_adv = attack(lin, x, y, threat)
        assert threat.contains(x, x_adv).all()
        broken = lin(x_adv).argmax(1) != y
        assert broken[dist < 0.98 * 0.1].all() and not broken[dist > 0.1].any()

"""MALT's targeting (Melamed et al. 2024): on a linear model its score is the exact distance to
each pairwise decision boundary, so its ranking is the exact order of those distances."""

import pytest
import torch

from robustlab.attacks import MALT, evaluate
from robustlab.attacks.malt import malt_ranking, malt_scores, rank_targets
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall
from tests.attacks.nets import interior_points, linear_classifier, minimal_distance


def _pairwise_distances(lin, x, y, norm):
    """The exact Linf / L2 distance from x to the hyperplane z_y = z_t, for every class t."""
    with torch.no_grad():
        z = lin(x)
        w = lin.weight.double()
        diff = w[y][:, None, :] - w[None, :, :]  # (N, K, d): w_y - w_t
        dual = diff.abs().sum(2) if norm == "inf" else diff.norm(dim=2)
        return (z.gather(1, y[:, None]) - z).double() / dual


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_ranking_is_the_exact_order_of_distances_to_the_boundaries(norm):
    lin = linear_classifier(d=12, k=7, seed=3).eval()
    x = interior_points(200, 12, seed=1)
    with torch.no_grad():
        y = lin(x).argmax(1)
    dist = _pairwise_distances(lin, x, y, norm)
    dist[torch.arange(len(y)), y] = torch.inf
    exact = dist.argsort(1)[:, :-1]  # the label (infinite distance) last, left out
    ranking, sorted_scores = malt_ranking(lin, x, y, norm)
    assert torch.equal(ranking, exact)
    assert torch.equal(rank_targets(lin, x, y, norm, "malt")[0], exact)
    scores, _ = malt_scores(lin, x, y, exact, norm)
    ref = dist.gather(1, exact).float()
    assert torch.allclose(scores, ref, rtol=1e-4, atol=1e-6)
    assert torch.equal(sorted_scores, scores)
    # the first target is the closest boundary: the minimal adversarial distance
    assert torch.allclose(scores[:, 0], minimal_distance(lin, x, y, norm), rtol=1e-4, atol=1e-6)
    # confidence ranks differently on some points (otherwise the test would not tell them apart)
    by_confidence, none = rank_targets(lin, x, y, norm, "confidence")
    assert none is None and not torch.equal(by_confidence, exact)


def test_candidates_limit_the_scored_classes():
    lin = linear_classifier(d=12, k=7, seed=3).eval()
    x = interior_points(50, 12, seed=1)
    with torch.no_grad():
        y = lin(x).argmax(1)
        conf, _ = rank_targets(lin, x, y, "inf", "confidence")
    got, scores = malt_ranking(lin, x, y, "inf", candidates=3)
    assert torch.isfinite(scores[:, :3]).all() and torch.isinf(scores[:, 3:]).all()
    assert torch.equal(got[:, 3:], conf[:, 3:])  # the rest by confidence
    assert torch.equal(got[:, :3].sort(1).values, conf[:, :3].sort(1).values)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_malt_top_one_breaks_exactly_the_points_below_eps(norm):
    """On a linear model the best target is the nearest boundary: one target is enough."""
    lin = linear_classifier(d=10, k=4).eval()
    x = interior_points(240, 10)
    with torch.no_grad():
        y = lin(x).argmax(1)
    eps = {"inf": 0.05, "2": 0.12}[norm]
    threat = LpBall(norm, eps)
    x_adv = MALT(n_iter=50, n_target_classes=1)(lin, x, y, threat)
    assert threat.contains(x, x_adv).all()
    with torch.no_grad():
        broken = lin(x_adv).argmax(1) != y
    dist = minimal_distance(lin, x, y, norm)
    below, above = dist < 0.98 * eps, dist > eps
    assert below.sum() > 20 and above.sum() > 20
    assert broken[below].all() and not broken[above].any()


def test_rapid_suite_on_a_linear_model_is_exact():
    lin = linear_classifier(d=10, k=4).eval()
    x = interior_points(240, 10)
    with torch.no_grad():
        y = lin(x).argmax(1)
    res = evaluate(lin, Dataset("linear", x, y), [0.05], "inf", suite="rapid", checks=False)
    dist = minimal_distance(lin, x, y, "inf")
    broken = ~torch.tensor(res.robust[0])
    assert broken[dist < 0.049].all() and not broken[dist > 0.05].any()
    assert res.attacks[:2] == ["apgd-ce", "malt"]


def test_unknown_targeting_is_an_error():
    lin = linear_classifier(d=10, k=4).eval()
    x = interior_points(4, 10)
    with pytest.raises(RobustlabError, match="targeting"):
        rank_targets(lin, x, torch.zeros(4, dtype=torch.long), "inf", "random")


def test_reach_leaves_out_targets_beyond_it():
    """A target whose linearised distance exceeds reach * eps is not attacked: on a linear model
    with reach 1 every point below eps is still broken, and the points beyond it cost nothing."""
    from robustlab.attacks.base import Counted

    lin = linear_classifier(d=10, k=4).eval()
    x = interior_points(240, 10)
    with torch.no_grad():
        y = lin(x).argmax(1)
    threat = LpBall("inf", 0.05)
    dist = minimal_distance(lin, x, y, "inf")
    counted = {}
    for reach in (None, 1.0, 0.0):
        c = Counted(lin)
        x_adv = MALT(n_iter=20, n_target_classes=3, reach=reach)(c, x, y, threat)
        with torch.no_grad():
            broken = lin(x_adv).argmax(1) != y
        assert not broken[dist > 0.05].any()
        if reach != 0.0:
            assert broken[dist < 0.049].all()
        else:
            assert torch.equal(x_adv, x)  # nothing within reach: nothing attacked
        counted[reach] = c.n_backward
    assert counted[0.0] == 4 * 240  # the ranking alone: one pass over 4 replicas
    assert counted[1.0] - counted[0.0] < (counted[None] - counted[0.0]) / 2

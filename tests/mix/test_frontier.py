"""The frontier: members and mixtures measured on the held-out split, attacked end to end."""

import copy

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.mix import mix, split

SMALL = {"scale": (1.0, 8.0), "power": (1.0, 2.0), "bias": (0.0, 1.0)}


def test_split_is_seeded_disjoint_and_checked(digits):
    d = digits.subset(40)
    a, b = split(d, 0.25, seed=3)
    a2, _ = split(d, 0.25, seed=3)
    assert len(a) == 10 and len(b) == 30 and torch.equal(a.x, a2.x)
    with pytest.raises(RobustlabError, match="fit_share"):
        split(d, 1.0, seed=0)
    with pytest.raises(RobustlabError, match="at least 4"):
        split(d.subset(3), 0.5, seed=0)


def test_frontier_rows_and_end_to_end_robustness(mlp, digits):
    robust = copy.deepcopy(mlp)
    with torch.no_grad():
        robust[-1].weight.mul_(0.3)  # a less confident member, same predictions
    r = mix(mlp, robust, digits.subset(60), 0.03, strengths=[1.0, 0.9], grid=SMALL)
    names = [row["name"] for row in r.rows]
    assert names[:3] == ["accurate", "robust", "mix q=1"] and names[-1] == "mix q=0.9"
    aimed = [row for row in r.rows if row["fit_target"]]  # MixedNUTS's constraint on the fit split
    assert len(r.rows) == 5 and len(aimed) == 1 and 0.9 < aimed[0]["strength"] < 1
    assert aimed[0]["name"] == f"mix q={aimed[0]['strength']:.3g} (fit target)" == names[3]
    for row in r.rows:
        assert 0 <= row["robust_accuracy"] <= row["clean_accuracy"] <= 1
    for row in r.rows[2:]:  # robust only where neither gradient path breaks the point
        assert row["robust_accuracy"] <= min(
            row["robust_exact_gradient"], row["robust_surrogate_gradient"]
        )
    assert 2 <= r.chosen < len(r.rows) and r.n_fit == 30 and r.n_eval == 30
    d = r.to_dict()
    assert d["frontier"] == r.rows and {m.name for m in r.metrics()} >= {
        "mix q=1 clean_accuracy", "robust robust_accuracy@0.03"}  # fmt: skip


def test_mix_rejects_no_strengths(mlp, digits):
    with pytest.raises(RobustlabError, match="strength"):
        mix(mlp, mlp, digits.subset(20), 0.03, strengths=[])


def test_strengths_left_out_when_time_runs_short(mlp, digits):
    asked: list[float] = []

    def fits_in(seconds: float) -> bool:
        asked.append(seconds)
        return False

    heard: list[str] = []
    r = mix(mlp, mlp, digits.subset(40), 0.03, strengths=[1.0, 0.9, 0.8], grid=SMALL,
            fit_target=False, fits_in=fits_in, progress=heard.append)  # fmt: skip
    assert [row["name"] for row in r.rows] == ["accurate", "robust", "mix q=1"]  # first always
    assert r.skipped == [0.9, 0.8] and r.to_dict()["skipped"] == [0.9, 0.8]
    assert len(asked) == 1 and asked[0] > 0 and len(r.fits) == 1 and r.chosen == 2
    assert any("broke" in m for m in heard)  # the attack engine reports through progress

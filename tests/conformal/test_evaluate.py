"""Coverage clean and under attack: the robust sets keep 1 - alpha, split conformal is beside."""

import pytest

from robustlab.conformal import conformal
from robustlab.errors import RobustlabError


def test_robust_sets_cover_under_attack(mlp, digits):
    r = conformal(mlp, digits.subset(120), 0.1, 0.02, sigma=0.1, n_samples=128, steps=10)
    assert r.n_cal == 60 and r.n_test == 60
    assert r.robust_covered()
    for m in ("rscp+", "vrcp"):
        for c in ("clean", "attacked"):
            assert r.row(m, c)["coverage"] >= 0.9
    # VRCP's set at an attacked point holds every label the split set holds at the clean point
    assert r.row("vrcp", "attacked")["coverage"] >= r.row("split", "clean")["coverage"]
    # the split baseline is attacked: its coverage can only drop on the attacked points
    assert r.row("split", "attacked")["coverage"] <= r.row("split", "clean")["coverage"]
    d = r.to_dict()
    assert {row["condition"] for row in d["rows"]} == {
        "clean", "score-pgd", "smoothed-score-pgd-eot", "attacked"}  # fmt: skip
    names = {m.name for m in r.metrics()}
    assert {"vrcp attacked coverage", "split clean mean_size"} <= names


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"alpha": 1.5}, "alpha"), ({"sigma": 0.0}, "sigma"), ({"cal_share": 1.0}, "cal_share")],
)
def test_bad_arguments(mlp, digits, kw, needle):
    args = {"alpha": 0.1, **kw}
    alpha = args.pop("alpha")
    with pytest.raises(RobustlabError, match=needle):
        conformal(mlp, digits.subset(20), alpha, 0.02, **args)

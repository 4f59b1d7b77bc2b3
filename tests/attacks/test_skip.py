"""Sound skipping: points certified by IBP / CROWN count as robust without being attacked, and
the robust accuracy is the same as attacking them."""

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.attacks import evaluate
from robustlab.attacks import skip as sk
from robustlab.data import Dataset, load_digits_split
from tests.attacks.nets import Quantised

EPS = 0.1


@pytest.fixture(scope="module")
def ibp_trained():
    """The zoo MLP trained with IBP at Linf 0.1 on the digits (a few epochs)."""
    from robustlab.train import train

    torch.manual_seed(0)
    model = zoo.build("mlp")
    data = load_digits_split(train=True)
    train(model, data, "ibp", EPS, epochs=6, batch_size=64, seed=0)
    return model.eval()


def test_certified_points_are_skipped_and_robust_accuracy_is_unchanged(ibp_trained, digits):
    data = digits.subset(200)
    on = evaluate(ibp_trained, data, [EPS / 2, EPS], "inf", suite="rapid", checks=False)
    off = evaluate(
        ibp_trained, data, [EPS / 2, EPS], "inf", suite="rapid", checks=False, skip_certified=False
    )
    assert on.robust == off.robust  # point for point, at both eps
    assert on.robust_accuracy == off.robust_accuracy
    assert on.certified_skipped >= 0.3 * len(data)  # most robust points never attacked
    assert (
        on.to_dict()["certified_skipped"]
        == on.certified_skipped
        == on.curve[0]["certified_skipped"]
    )
    assert off.certified_skipped == 0 and off.certification == []
    for j, e in enumerate(on.eps):
        attacked_on = next(r["n_attacked"] for r in on.per_attack if r["eps"] == e)
        attacked_off = next(r["n_attacked"] for r in off.per_attack if r["eps"] == e)
        assert attacked_on == attacked_off - on.curve[j]["certified_skipped"]
    methods = {(r["method"], r["eps"]) for r in on.certification}
    assert ("ibp", EPS / 2) in methods
    assert on.n_backward < off.n_backward


def test_skipped_points_are_never_broken(ibp_trained, digits):
    """Soundness: a stronger attack on the certified points breaks none of them."""
    from robustlab.threat import LpBall

    data = digits.subset(200)
    x, y = data.x, data.y
    with torch.no_grad():
        ok = ibp_trained(x).argmax(1) == y
    threat = LpBall("inf", EPS)
    cert, recs = sk.certify_points(ibp_trained, x[ok], y[ok], threat, 10)
    assert int(cert.sum()) > 0 and recs[0].method == "ibp"
    res = evaluate(
        ibp_trained,
        Dataset("certified", x[ok][cert], y[ok][cert]),
        [EPS],
        "inf",
        suite="standard",
        checks=False,
        skip_certified=False,
    )
    assert res.robust_accuracy == 1.0


def test_models_the_bounds_cannot_handle_are_attacked(mlp, digits):
    masked = Quantised(mlp).eval()  # rounding: no bound rule
    res = evaluate(masked, digits.subset(30), [0.05], "inf", attacks=["apgd-ce"], checks=False)
    assert res.certified_skipped == 0
    assert res.certification and res.certification[0]["note"]
    assert res.per_attack[0]["n_attacked"] == round(res.clean_accuracy * 30)


def test_only_the_named_methods_run(mlp, digits):
    res = evaluate(
        mlp, digits.subset(30), [0.01], "inf", attacks=["apgd-ce"], skip_certified=["ibp"]
    )
    assert {r["method"] for r in res.certification} == {"ibp"}
    with pytest.raises(Exception, match="skip_certified"):
        evaluate(mlp, digits.subset(4), [0.01], "inf", skip_certified=["alpha-crown"])


def test_crown_probe_and_size_limit(monkeypatch, digits):
    from robustlab.threat import LpBall

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = digits.x[:40], digits.y[:40]
    threat = LpBall("inf", 0.3)  # nothing certifiable: CROWN stops after its probe
    cert, recs = sk.certify_points(net, x, y, threat, 10)
    assert not cert.any()
    crown = next(r for r in recs if r.method == "crown")
    assert crown.n_bounded == sk.CROWN_PROBE and "none of the first" in crown.note
    monkeypatch.setattr(sk, "CROWN_MAX_PARAMS", 10)
    _, recs = sk.certify_points(net, x, y, threat, 10)
    assert next(r for r in recs if r.method == "crown").note == "model too large"


def test_the_size_limit_is_the_audits():
    from robustlab.audit import profiles

    assert sk.CROWN_MAX_PARAMS == profiles.CROWN_MAX_PARAMS
    assert sk.CROWN_MAX_INPUTS == profiles.CROWN_MAX_INPUTS

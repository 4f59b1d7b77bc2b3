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
        recs = [r for r in on.certification if r["eps"] == e]
        ibp = sum(r["n_certified"] for r in recs if r["method"] == "ibp")
        assert attacked_on == attacked_off - ibp  # IBP before the first attack, CROWN after it
        assert on.curve[j]["certified_skipped"] == sum(r["n_certified"] for r in recs)
    methods = {(r["method"], r["eps"]) for r in on.certification}
    assert ("ibp", EPS / 2) in methods
    assert on.n_backward < off.n_backward


@pytest.mark.slow
def test_skipped_points_are_never_broken(ibp_trained, digits):
    """Soundness: the standard suite on the certified points breaks none of them."""
    from robustlab.threat import LpBall

    x, y = digits.x[:120], digits.y[:120]
    with torch.no_grad():
        ok = ibp_trained(x).argmax(1) == y
    threat = LpBall("inf", EPS)
    cert, rec = sk.certify_points(ibp_trained, x[ok], y[ok], threat, 10, "ibp")
    assert int(cert.sum()) > 20 and rec.method == "ibp" and rec.n_certified == int(cert.sum())
    data = Dataset("certified", x[ok][cert], y[ok][cert])
    res = evaluate(
        ibp_trained, data, [EPS], "inf", suite="standard", checks=False, skip_certified=False
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


def test_probe_cost_rule_and_size_limit(monkeypatch, digits):
    from robustlab.threat import LpBall

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x = digits.x[:40]
    with torch.no_grad():
        y = net(x).argmax(1)  # margins of the predicted class: certifiable at a tiny eps
    cert, rec = sk.certify_points(net, x, y, LpBall("inf", 0.3), 10, "crown")
    assert not cert.any()  # nothing certifiable: CROWN stops after its probe
    assert rec.n_bounded == sk.PROBES["crown"][-1] and "none of the first" in rec.note
    tiny = LpBall("inf", 1e-4)  # everything certified
    cert, rec = sk.certify_points(net, x, y, tiny, 10, "crown")
    assert cert.all() and rec.n_bounded == 40 and rec.note == ""
    cert, rec = sk.certify_points(net, x, y, tiny, 10, "crown", attack_seconds=1e-9)
    assert rec.n_bounded == sk.PROBES["crown"][0] and "not worth it" in rec.note
    assert int(cert.sum()) == sk.PROBES["crown"][0]  # what was bounded still counts
    cert, rec = sk.certify_points(net, x, y, tiny, 10, "crown", attack_seconds=1e9)
    assert cert.all() and rec.note == ""
    monkeypatch.setattr(sk, "CROWN_MAX_PARAMS", 10)
    cert, rec = sk.certify_points(net, x, y, tiny, 10, "crown")
    assert rec.note == "model too large" and not cert.any()
    cert, rec = sk.certify_points(net, x, y, tiny, 10, "ibp")  # IBP has no size limit
    assert cert.all()


def test_crown_runs_after_the_first_attack_on_what_it_left(mlp, digits):
    res = evaluate(mlp, digits.subset(100), [0.05], "inf", suite="rapid", checks=False)
    crown = [r for r in res.certification if r["method"] == "crown"]
    assert len(crown) == 1
    first = res.per_attack[0]
    assert crown[0]["n_bounded"] <= first["n_attacked"] - first["n_broken"]


def test_the_size_limit_is_the_audits():
    from robustlab.audit import profiles

    assert sk.CROWN_MAX_PARAMS == profiles.CROWN_MAX_PARAMS
    assert sk.CROWN_MAX_INPUTS == profiles.CROWN_MAX_INPUTS

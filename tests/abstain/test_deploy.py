"""Certify or abstain: certificates sound against PGD, abstention under the availability attack."""

import pytest
import torch

from robustlab.abstain import certified_predictions, certify_or_abstain, looseness_attack
from robustlab.attacks import PGD
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall


def test_certificates_at_zero_and_huge_radius(mlp, digits):
    x = digits.x[:16]
    labels, cert = certified_predictions(mlp, x, 0.0, digits.lower, digits.upper)
    assert torch.equal(labels, mlp(x).argmax(1)) and bool(cert.all())
    _, cert = certified_predictions(mlp, x, 1.0, digits.lower, digits.upper, "ibp")
    assert not bool(cert.any())


def test_certified_labels_survive_pgd(mlp, digits):
    x = digits.x[:32]
    labels, cert = certified_predictions(mlp, x, 0.02, digits.lower, digits.upper)
    assert bool(cert.any())
    threat = LpBall("inf", 0.02, digits.lower, digits.upper)
    adv = PGD(steps=20)(mlp, x[cert], labels[cert], threat)
    assert torch.equal(mlp(adv).argmax(1), labels[cert])


def test_looseness_attack_stays_in_the_threat_model(mlp, digits):
    x = digits.x[:8]
    threat = LpBall("inf", 0.03, digits.lower, digits.upper)
    adv = looseness_attack(mlp, x, threat, 0.02, steps=5)
    assert float((adv - x).abs().max()) <= 0.03 + 1e-6


def test_abstention_under_attack_is_at_least_the_clean_one(mlp, digits):
    r = certify_or_abstain(mlp, digits.subset(48), 0.015, 0.03, steps=20)
    assert r.attacked["abstain_rate"] >= r.clean["abstain_rate"]
    assert r.attacked["abstain_rate"] > r.clean["abstain_rate"]  # the attack does something here
    for d in (r.clean, r.attacked):
        assert d["accuracy"] + d["abstain_rate"] + d["wrong_rate"] == pytest.approx(1.0)
    assert {m.name for m in r.metrics()} == {
        "certify-or-abstain clean abstain_rate@0.03",
        "certify-or-abstain attacked abstain_rate@0.03",
    }


def test_bad_arguments(mlp, digits):
    with pytest.raises(RobustlabError, match="radius"):
        certify_or_abstain(mlp, digits.subset(4), -0.1, 0.03)
    with pytest.raises(RobustlabError, match="norm"):
        certify_or_abstain(mlp, digits.subset(4), 0.01, 0.03, "1")


def test_results_on_chunks_merge_into_the_whole(mlp, digits):
    from robustlab.abstain import AbstainResult

    d = digits.subset(24)
    halves = [d.subset(12), type(d)(d.name, d.x[12:], d.y[12:], d.lower, d.upper)]
    parts = [certify_or_abstain(mlp, h, 0.015, 0.03, steps=5, seed=i) for i, h in enumerate(halves)]
    m = AbstainResult.merged(parts)
    assert m.examples == 24 and m.seconds == pytest.approx(sum(p.seconds for p in parts))
    for cond in ("clean", "attacked"):
        for key in ("abstain_rate", "accuracy", "wrong_rate"):
            want = (getattr(parts[0], cond)[key] + getattr(parts[1], cond)[key]) / 2
            assert getattr(m, cond)[key] == pytest.approx(want)
    with pytest.raises(RobustlabError, match="at least one"):
        AbstainResult.merged([])

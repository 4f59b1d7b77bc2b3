"""Certified accuracy over several methods and eps from Python (what ``robustlab certify``
reports): the union over methods, per-method rows and the tightness."""

from __future__ import annotations

import pytest

from robustlab.bounds import certify
from robustlab.bounds.certify_many import certify_many, parse_methods
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall


def test_union_over_methods_is_at_least_each_method(mlp, digits):
    data = digits.subset(40)
    r = certify_many(mlp, data, [0.01, 0.05], "inf", "ibp,crown")
    assert r.methods == ["ibp", "crown"] and [p["eps"] for p in r.curve] == [0.01, 0.05]
    assert len(r.per_method) == 4
    for i, e in enumerate([0.01, 0.05]):
        threat = LpBall("inf", e, data.lower, data.upper)
        each = [certify(mlp, data, threat, m) for m in ("ibp", "crown")]
        union = [a or b for a, b in zip(each[0].certified, each[1].certified, strict=True)]
        assert r.certified[i] == union
        assert r.curve[i]["certified_accuracy"] == pytest.approx(sum(union) / len(union))
        assert r.curve[i]["certified_accuracy"] >= max(c.certified_accuracy for c in each)
    assert r.tightness is not None and 0 < r.tightness <= 1
    assert r.to_dict()["certified_accuracy"] == r.curve[0]["certified_accuracy"]
    assert [m.name for m in r.metrics()] == [
        "clean_accuracy", "certified_accuracy@0.01", "certified_accuracy@0.05"
    ]  # fmt: skip


def test_l2_has_no_tightness_and_bad_methods_are_named(mlp, digits):
    r = certify_many(mlp, digits.subset(10), [0.1], "2", ["crown"])
    assert r.tightness is None and r.to_dict()["method"] == "crown"
    with pytest.raises(RobustlabError, match="bound method"):
        parse_methods("ibp,nope")
    with pytest.raises(RobustlabError, match="precision"):
        certify_many(mlp, digits.subset(10), [0.1], methods="ibp", precision="float16")

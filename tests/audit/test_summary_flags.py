"""Audit summary: the eps grid by the data's kind, a constant-prediction flag, a shift-fragility
flag, the verdict on the cards' base, only broken examples in the examples section."""

from types import SimpleNamespace

import torch

from robustlab.audit.profiles import QUICK, default_eps, headline_eps
from robustlab.audit.summary import _verdict, flags


def test_default_eps_follow_the_data_kind():
    cifar = default_eps("inf", 1.0, (3, 32, 32))
    assert headline_eps(cifar) == 8 / 255 and max(cifar) == 16 / 255
    assert headline_eps(default_eps("inf", 1.0, (1, 28, 28))) == 0.3
    assert default_eps("inf", 1.0, (1, 8, 8)) == default_eps("inf")  # small images: as before
    assert default_eps("inf", 2.0, (3, 32, 32))[3] == 16 / 255  # scaled to the range
    assert headline_eps(default_eps("2", 1.0, (3, 32, 32))) == 0.5


def _ctx(pred, y):
    data = SimpleNamespace(y=torch.tensor(y))
    return SimpleNamespace(pred=torch.tensor(pred), data=data, profile=QUICK)


def _names(ctx, report):
    return {f["name"]: f for f in flags(ctx, report)}


def test_constant_prediction_flag():
    y = [0, 1, 2, 3] * 25
    got = _names(_ctx([2] * 100, y), {"clean": {"accuracy": 0.25}})
    assert got["constant_prediction"]["level"] == "warning"
    assert "class 2 for 100%" in got["constant_prediction"]["message"]
    assert "constant_prediction" not in _names(_ctx(y, y), {"clean": {"accuracy": 1.0}})


def test_shift_fragile_flag():
    y = [0, 1] * 50
    families = [{"family": "translation", "worst_case_accuracy": 0.0},
                {"family": "rotation", "worst_case_accuracy": 0.0}]  # fmt: skip
    report = {
        "clean": {"accuracy": 0.9},
        "corruptions": {"transformations": {"families": families}},
    }
    got = _names(_ctx(y, y), report)
    assert "shift_fragile" in got and "0.0% of the examples" in got["shift_fragile"]["message"]
    families[0]["worst_case_accuracy"] = 0.6
    assert "shift_fragile" not in _names(_ctx(y, y), report)


def test_verdict_uses_the_cards_base():
    level, text = _verdict(0.96, 0.9, 0.78, 10)
    assert level == "warn" and "78.0% of the examples" in text and "96.0% clean" in text
    level, text = _verdict(0.8, 0.79, 0.78, 10)
    assert level == "good" and "78.0% of the examples robust" in text

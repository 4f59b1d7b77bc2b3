"""Acceptance on small budgets (zoo MLP, digits, Linf eps 0.1): PGD-AT and TRADES are clearly more
robust under PGD than standard training; IBP and CROWN-IBP clearly more often certified; no
certified point is ever broken by the attack."""

import pytest
import torch

from robustlab import zoo
from robustlab.data import load_digits_split
from robustlab.train import train
from robustlab.train.compare import evaluate_trained

EPS = 0.1
METHODS = ("standard", "pgd-at", "trades", "ibp", "crown-ibp")


@pytest.fixture(scope="module")
def table():
    train_d, test_d = load_digits_split(train=True), load_digits_split(train=False).subset(150)
    rows = {}
    for name in METHODS:
        torch.manual_seed(0)
        model = zoo.build("mlp")
        train(model, train_d, name, EPS, epochs=8, batch_size=64, eval_data=test_d.subset(32))
        rows[name] = evaluate_trained(model.eval(), test_d, EPS, attacks=["pgd"])
        rows[name]["model"] = model
    return rows, test_d


def test_adversarial_training_is_more_robust(table):
    rows, _ = table
    for name in ("pgd-at", "trades"):
        assert rows[name]["robust_accuracy"] >= rows["standard"]["robust_accuracy"] + 0.15, name


def test_certified_training_is_more_certified(table):
    rows, _ = table
    for name in ("ibp", "crown-ibp"):
        assert rows[name]["certified_accuracy"] >= rows["standard"]["certified_accuracy"] + 0.3
        assert rows[name]["clean_accuracy"] >= 0.7


def test_certified_points_are_never_broken(table):
    from robustlab.attacks import PGD, run_attack
    from robustlab.bounds import certify
    from robustlab.threat import LpBall

    rows, test_d = table
    threat = LpBall("inf", EPS)
    for name in ("pgd-at", "ibp"):
        model = rows[name]["model"]
        cert = torch.tensor(certify(model, test_d, threat, "crown").certified)
        adv = run_attack(model, test_d, threat, PGD(steps=50, restarts=2))
        robust = torch.tensor(adv.robust)
        assert not (cert & ~robust).any(), name

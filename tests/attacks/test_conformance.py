"""The conformance suite every registered attack must pass."""

import pytest
import torch
from torch import nn

from robustlab.attacks import APGD, REGISTRY, get_attack, run_attack
from robustlab.threat import Box, LpBall

FAST = {
    "fgsm": {},
    "pgd": {"steps": 5},
    "apgd-ce": {"n_iter": 10},
    "apgd-dlr": {"n_iter": 10},
    "apgd-t": {"n_iter": 5, "n_target_classes": 2},
    "malt": {"n_iter": 5, "n_target_classes": 2},
    "fab": {"n_iter": 5},
    "restarts": {"n_iter": 5, "copies": 4, "n_target_classes": 2},
    "fab-t": {"n_iter": 5, "n_target_classes": 2},
    "square": {"n_queries": 30},
    "cw": {"steps": 10, "search_steps": 2},
    "deepfool": {"steps": 5},
    "transfer": {"attack": APGD(n_iter=5)},
}
THREATS = [LpBall("inf", 0.1), LpBall("2", 0.5), Box(0.2, 0.8)]


def _attack(name, surrogate, seed=0):
    kwargs = dict(FAST[name])
    if name == "transfer":
        kwargs["surrogate"] = surrogate
    else:
        kwargs["seed"] = seed
    return get_attack(name, **kwargs)


def test_every_registered_attack_is_covered():
    assert set(REGISTRY) == set(FAST)


@pytest.fixture(scope="module")
def surrogate():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.mark.parametrize("threat", THREATS, ids=["linf", "l2", "box"])
@pytest.mark.parametrize("name", sorted(FAST))
def test_conformance(name, threat, mlp, digits, surrogate):
    x, y = digits.x[:24], digits.y[:24]
    if isinstance(threat, Box):
        x = x.clamp(0.2, 0.8)
    for p in mlp.parameters():
        p.grad = None  # the zoo's training leaves gradients behind
    params = {n: p.requires_grad for n, p in mlp.named_parameters()}
    for training in (True, False):
        mlp.train(training)
        x_adv = _attack(name, surrogate)(mlp, x, y, threat)
        assert mlp.training == training
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
        assert torch.isfinite(x_adv).all()
        assert threat.contains(x, x_adv).all()
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    mlp.eval()
    assert all(p.grad is None for p in mlp.parameters())
    assert {n: p.requires_grad for n, p in mlp.named_parameters()} == params
    again = _attack(name, surrogate)(mlp, x, y, threat)
    assert torch.equal(x_adv, again)


@pytest.mark.parametrize("name", sorted(FAST))
def test_runner_restores_mode_and_parameters(name, digits, surrogate):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.0))
    model.train()
    res = run_attack(model, digits.subset(16), LpBall("inf", 0.1), _attack(name, surrogate))
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert res.robust_accuracy <= res.clean_accuracy

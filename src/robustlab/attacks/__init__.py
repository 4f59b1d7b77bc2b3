"""Adversarial attacks: a registry by name, and robust-accuracy evaluation."""

from robustlab.attacks.base import REGISTRY, Attack, get_attack, get_loss, predict
from robustlab.attacks.evaluate import AttackResult, robustness_curve, run_attack
from robustlab.attacks.pgd import PGD

__all__ = [
    "REGISTRY",
    "Attack",
    "AttackResult",
    "PGD",
    "get_attack",
    "get_loss",
    "predict",
    "robustness_curve",
    "run_attack",
]

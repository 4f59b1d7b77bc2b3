"""Adversarial attacks: a registry by name, an AutoAttack-grade ensemble, robust-accuracy
evaluation with reliability flags."""

from robustlab.attacks.apgd import APGD, APGDDLR
from robustlab.attacks.apgdt import APGDT, MALT
from robustlab.attacks.base import REGISTRY, Attack, get_attack, get_loss, predict
from robustlab.attacks.cw import CarliniWagnerL2
from robustlab.attacks.deepfool import DeepFool
from robustlab.attacks.ensemble import Examples, SuiteResult, evaluate
from robustlab.attacks.evaluate import AttackResult, robustness_curve, run_attack
from robustlab.attacks.fab import FAB, FABT
from robustlab.attacks.fgsm import FGSM
from robustlab.attacks.flags import Flag
from robustlab.attacks.pgd import PGD
from robustlab.attacks.restarts import Restarts
from robustlab.attacks.square import Square
from robustlab.attacks.suites import SUITES, suite_attacks
from robustlab.attacks.transfer import Transfer

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "FAB",
    "FABT",
    "FGSM",
    "MALT",
    "PGD",
    "Restarts",
    "REGISTRY",
    "SUITES",
    "Attack",
    "AttackResult",
    "Examples",
    "CarliniWagnerL2",
    "DeepFool",
    "Flag",
    "Square",
    "SuiteResult",
    "Transfer",
    "evaluate",
    "get_attack",
    "get_loss",
    "predict",
    "robustness_curve",
    "run_attack",
    "suite_attacks",
]

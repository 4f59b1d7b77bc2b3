"""Hardening: standard, adversarial (PGD-AT, TRADES, fast FGSM-AT, interpolated AT, holistic
robust), mixup, LOBSTER pruning, Gaussian-noise, certified (IBP, CROWN-IBP) and 1-Lipschitz
training with eps warm-up schedules, FullCert's training-time certificate, and a comparison of
the trained models."""

from robustlab.train import hr, lipschitz, lobster, mixing  # noqa: F401 (they register methods)
from robustlab.train.init import ibp_init
from robustlab.train.loop import TrainResult, train
from robustlab.train.methods import METHODS, get_method
from robustlab.train.schedule import EpsSchedule

__all__ = ["METHODS", "EpsSchedule", "TrainResult", "get_method", "ibp_init", "train"]

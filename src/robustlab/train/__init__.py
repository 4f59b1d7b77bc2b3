"""Hardening: standard, adversarial (PGD-AT, TRADES, fast FGSM-AT), Gaussian-noise and certified
(IBP, CROWN-IBP) training with eps warm-up schedules, and a comparison of the trained models."""

from robustlab.train import lobster  # noqa: F401 (registers its training method)
from robustlab.train.init import ibp_init
from robustlab.train.loop import TrainResult, train
from robustlab.train.methods import METHODS, get_method
from robustlab.train.schedule import EpsSchedule

__all__ = ["METHODS", "EpsSchedule", "TrainResult", "get_method", "ibp_init", "train"]

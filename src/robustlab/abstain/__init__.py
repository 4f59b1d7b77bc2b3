"""Certify-or-abstain deployments (answer only where a sound bound certifies the prediction in a
ball around the input) and the availability attack on them (Lorenz et al. 2023)."""

from robustlab.abstain.deploy import (
    AbstainResult,
    certified_predictions,
    certify_or_abstain,
    looseness_attack,
)

__all__ = ["AbstainResult", "certified_predictions", "certify_or_abstain", "looseness_attack"]

"""Fast gradient sign method (Goodfellow et al. 2015, arXiv:1412.6572); for L2 the fast gradient
method (one normalised gradient step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    Objective,
    ascent_direction,
    eot_gradient,
    geometry,
    get_loss,
    register,
)
from robustlab.threat import ThreatModel


@register("fgsm")
@dataclass(frozen=True)
class FGSM:
    """Fast gradient sign method (Goodfellow et al. 2015, arXiv:1412.6572): one step of size eps
    along sign(grad) (Linf) or grad / ||grad||_2 (L2), projected onto the threat model."""

    loss: str | Objective = "ce"
    seed: int = 0  # deterministic; kept for a uniform interface
    eot: int = 1  # forward passes the gradient is averaged over (randomized models)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        objective = get_loss(self.loss)
        geo = geometry(threat, x)
        _, grad, _ = eot_gradient(model, x, y, None, objective, self.eot)
        with torch.no_grad():
            return threat.project(x, x + geo.eps * ascent_direction(grad, geo.norm))

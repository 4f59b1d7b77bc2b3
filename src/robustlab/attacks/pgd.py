"""Projected gradient descent (Madry et al. 2018, arXiv:1706.06083)."""

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
    mean_logits,
    register,
)
from robustlab.threat import ThreatModel


@register("pgd")
@dataclass(frozen=True)
class PGD:
    """Projected gradient descent (Madry et al. 2018, arXiv:1706.06083), Linf (sign) or L2 steps,
    with random start and restarts.

    Keeps, per example, the first iterate that is misclassified and stops attacking it; restarts
    run only on examples not yet broken. ``eot`` > 1 averages each gradient (and the logits that
    decide success) over that many forward passes (randomized models).
    """

    steps: int = 50
    step_size: float | None = None  # None: 2.5 * eps / steps
    restarts: int = 1
    random_start: bool = True
    loss: str | Objective = "ce"
    seed: int = 0
    eot: int = 1  # forward passes per gradient (expectation over transformation)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        objective = get_loss(self.loss)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        geo = geometry(threat, x)
        step = self.step_size if self.step_size is not None else 2.5 * geo.eps / self.steps
        per_coord = isinstance(step, Tensor)
        best = x.clone()
        todo = torch.arange(len(x), device=x.device)
        for _ in range(max(1, self.restarts)):
            if len(todo) == 0:
                break
            idx, x0, y0 = todo, x[todo], y[todo]
            s = step[idx] if per_coord else step
            xa = threat.project(x0, threat.sample(x0, 1, gen)[0]) if self.random_start else x0
            for t in range(self.steps + 1):
                last = t == self.steps
                xa = xa.detach()
                if last:
                    grad, logits = None, mean_logits(model, xa, self.eot)
                else:
                    _, grad, logits = eot_gradient(model, xa, y0, None, objective, self.eot)
                wrong = logits.argmax(1) != y0
                if bool(wrong.any()):
                    best[idx[wrong]] = xa[wrong]
                    keep = ~wrong
                    idx, x0, y0, xa = idx[keep], x0[keep], y0[keep], xa[keep]
                    s = s[keep] if per_coord else s
                    grad = grad[keep] if grad is not None else None
                if last or len(idx) == 0:
                    break
                with torch.no_grad():
                    xa = threat.project(x0, xa + s * ascent_direction(grad, geo.norm))
            if len(idx):
                best[idx] = xa
            todo = idx
        return best

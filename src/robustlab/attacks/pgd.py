"""Projected gradient descent (Madry et al. 2018, arXiv:1706.06083)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import Objective, get_loss, register
from robustlab.threat import Box, LpBall, ThreatModel


def _step_scale(threat: ThreatModel, x: Tensor) -> Tensor | float:
    if isinstance(threat, LpBall):
        return threat.eps
    lo, hi = threat.box(x)
    return (hi - lo) / 2


@register("pgd")
@dataclass(frozen=True)
class PGD:
    """Projected gradient descent with random start and restarts, Linf (sign) or L2 steps.

    Keeps, per example, the first iterate that is misclassified; restarts run only on examples
    not yet broken.
    """

    steps: int = 50
    step_size: float | None = None  # None: 2.5 * eps / steps
    restarts: int = 1
    random_start: bool = True
    loss: str | Objective = "ce"
    seed: int = 0

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        objective = get_loss(self.loss)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        scale = _step_scale(threat, x)
        step = self.step_size if self.step_size is not None else 2.5 * scale / self.steps
        linf = isinstance(threat, Box) or threat.norm == "inf"
        best = x.clone()
        todo = torch.arange(len(x), device=x.device)
        for _ in range(max(1, self.restarts)):
            if len(todo) == 0:
                break
            x0, y0 = x[todo], y[todo]
            s = step[todo] if isinstance(step, Tensor) else step
            xa = threat.project(x0, threat.sample(x0, 1, gen)[0]) if self.random_start else x0
            found = torch.zeros(len(todo), dtype=torch.bool, device=x.device)
            for t in range(self.steps + 1):
                xa = xa.detach().requires_grad_(t < self.steps)
                logits = model(xa)
                with torch.no_grad():
                    new = (logits.argmax(1) != y0) & ~found
                    best[todo[new]] = xa[new].detach()
                    found |= new
                if t == self.steps or bool(found.all()):
                    break
                (grad,) = torch.autograd.grad(objective(logits, y0).sum(), xa)
                with torch.no_grad():
                    if linf:
                        xa = xa + s * grad.sign()
                    else:
                        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                        xa = xa + s * grad / norm.view(-1, *([1] * (grad.dim() - 1)))
                    xa = threat.project(x0, xa)
            keep = ~found
            best[todo[keep]] = xa.detach()[keep]
            todo = todo[keep]
        return best

"""Projected gradient ascent of an objective of the input (Madry et al. 2018, arXiv:1706.06083),
with expectation over transformation (Athalye et al. 2018, arXiv:1802.00420) when the objective
draws its own randomness: the gradient of a mean over ``eot`` draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.attacks.base import ascent_direction, geometry
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall, ThreatModel

Objective = Callable[[Tensor], Tensor]  # inputs (N, ...) -> per-example value to maximise (N,)


@dataclass(frozen=True)
class Ascent:
    """Projected gradient ascent on ``objective(x)`` inside a threat model, keeping per example
    the iterate with the largest objective seen (evaluated on the same draw as its gradient).

    ``eot``: gradients averaged over that many calls of a random objective per step."""

    steps: int = 20
    step_size: float | None = None  # None: 2.5 * eps / steps
    restarts: int = 1
    random_start: bool = True
    eot: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.restarts < 1 or self.eot < 1:
            raise RobustlabError(
                f"steps, restarts and eot must be >= 1; found {self.steps}, {self.restarts}, "
                f"{self.eot}"
            )

    def __call__(
        self, objective: Objective, x0: Tensor, threat: ThreatModel, start: Tensor | None = None
    ) -> Tensor:
        """``start``: where the first restart begins (projected into the threat model; a warm
        start from another attack's points), instead of a random point."""
        if isinstance(threat, LpBall) and threat.eps == 0:
            return x0.clone()
        gen = torch.Generator(device=x0.device).manual_seed(self.seed)
        geo = geometry(threat, x0)
        step = self.step_size if self.step_size is not None else 2.5 * geo.eps / self.steps
        best = x0.clone()
        best_value = torch.full((len(x0),), -torch.inf, dtype=torch.float64, device=x0.device)
        for r in range(self.restarts):
            if r == 0 and start is not None:
                x = threat.project(x0, start.detach().clone())
            elif self.random_start:
                x = threat.project(x0, threat.sample(x0, 1, gen)[0])
            else:
                x = x0.clone()
            for t in range(self.steps + 1):
                x = x.detach().requires_grad_(t < self.steps)
                with torch.set_grad_enabled(t < self.steps):
                    value = sum(objective(x) for _ in range(self.eot)) / self.eot
                better = value.detach().double() > best_value
                best[better] = x.detach()[better]
                best_value = torch.where(better, value.detach().double(), best_value)
                if t == self.steps:
                    break
                (grad,) = torch.autograd.grad(value.sum(), x)
                grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
                with torch.no_grad():
                    x = threat.project(x0, x + step * ascent_direction(grad, geo.norm))
        return best


def ascend(objective: Objective, x0: Tensor, threat: ThreatModel, **kwargs) -> Tensor:
    """``Ascent(**kwargs)(objective, x0, threat)``."""
    return Ascent(**kwargs)(objective, x0, threat)

"""Training-time adversaries: PGD run for a fixed number of steps (Madry et al. 2018,
arXiv:1706.06083) and FGSM from a random start (Wong et al. 2020, arXiv:2001.03994).

Unlike the evaluation attacks in ``robustlab.attacks`` they never stop early on a misclassified
point: training needs the loss maximiser, not the first adversarial example.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustlab.attacks.base import input_gradients_only
from robustlab.threat import LpBall

Loss = Callable[[Tensor, Tensor], Tensor]  # (logits, labels or targets) -> scalar to maximise


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits, y, reduction="sum")


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: LpBall,
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    loss: Loss = _ce,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``steps`` signed-gradient ascent steps on ``loss`` projected onto ``threat`` (Linf).

    ``start`` overrides the random start; ``step_size`` defaults to ``2.5 * eps / steps``.
    Gradients reach only the input, never the parameters.
    """
    if threat.eps == 0 or steps == 0:
        return x.detach().clone()
    step = step_size if step_size is not None else 2.5 * threat.eps / steps
    if start is not None:
        xa = threat.project(x, start.detach())
    elif random_start:
        xa = threat.sample(x, 1, generator)[0]
    else:
        xa = x.detach().clone()
    with input_gradients_only(model), torch.enable_grad():
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(loss(model(xa), y), xa)
            xa = threat.project(x, xa.detach() + step * grad.sign())
    return xa.detach()


def fgsm_random_start(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: LpBall,
    *,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One FGSM step of size ``alpha`` (default ``1.25 * eps``) from a uniform random point of the
    Linf ball, projected back onto it (Wong et al. 2020, "fast is better than free")."""
    step = 1.25 * threat.eps if alpha is None else alpha
    return pgd(
        model,
        x,
        y,
        threat,
        steps=1,
        step_size=step,
        start=threat.sample(x, 1, generator)[0],
    )

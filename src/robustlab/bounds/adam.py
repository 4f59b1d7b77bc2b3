"""Adam ("Adam: A Method for Stochastic Optimization", Kingma & Ba 2015) for the slopes of
alpha-CROWN and the multipliers of beta-CROWN: the update of ``torch.optim.Adam`` with its
defaults (its single-tensor path, op for op), without ``torch.optim``, whose first optimizer
imports ``torch._dynamo`` (about 0.8 s on a quiet machine, several seconds under load: paid by
every verification process within its deadline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Adam:
    """Adam over groups of tensors, each group with its own learning rate; ``decay`` multiplies
    every learning rate after each step (``ExponentialLR``). ``step(grads)`` takes the gradients
    in the order of the groups' tensors; a ``None`` gradient leaves its tensor alone."""

    def __init__(
        self,
        groups: Sequence[tuple[Sequence[Tensor], float]],
        decay: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = [p for ps, _ in groups for p in ps]
        self.lrs = [lr for ps, lr in groups for _ in ps]
        self.decay, self.betas, self.eps = decay, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = [0] * len(self.params)
        self.scale = 1.0

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor | None]) -> None:
        b1, b2 = self.betas
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if g is None:
                continue
            self.steps[i] += 1
            t = self.steps[i]
            m, v = self.m[i], self.v[i]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step_size = self.lrs[i] * self.scale / (1 - b1**t)
            denom = (v.sqrt() / (1 - b2**t) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)
        self.scale *= self.decay

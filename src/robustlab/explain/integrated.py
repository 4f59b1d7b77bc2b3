"""Integrated Gradients with a convergence delta, streamed over (input, step) rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.explain.base import (
    ExplainResult,
    Target,
    baseline_like,
    blocks,
    check_positive,
    register,
    run,
)

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def path_rule(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alphas`` in [0, 1] and weights summing to 1 for the path integral."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, weights / 2
    if rule == "riemann_trapezoid":
        if n < 2:
            raise RobustlabError(f"riemann_trapezoid needs n_steps >= 2; found {n}")
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return np.linspace(0, 1, n), w
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if rule not in offsets:
        raise RobustlabError(f"unknown integration rule '{rule}'; known: {', '.join(RULES)}")
    return (np.arange(n) + offsets[rule]) / n, np.full(n, 1.0 / n)


@register("integrated-gradients")
@dataclass(frozen=True)
class IntegratedGradients:
    """Integrated Gradients (Sundararajan et al. 2017, arXiv:1703.01365).

    ``delta`` per input is the completeness error sum(attributions) - (f(x) - f(baseline)).
    Rows (input, step) go through the model ``batch_size`` at a time and are summed as they
    come, so memory does not grow with ``n_steps``."""

    signed: ClassVar[bool] = True  # attributions have a sign (a diverging colour map)

    n_steps: int = 50
    baseline: float | Tensor = 0.0
    rule: str = "gausslegendre"
    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        check_positive(n_steps=self.n_steps)
        alphas, weights = path_rule(self.rule, self.n_steps)
        x0 = x.detach()
        base = baseline_like(self.baseline, x0)
        diff = x0 - base

        def body(passes, score):
            a = torch.as_tensor(alphas, dtype=x0.dtype, device=x0.device)
            w = torch.as_tensor(weights, dtype=x0.dtype, device=x0.device)
            total = torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
            shape = (-1,) + (1,) * (x0.dim() - 1)
            for rows in blocks(len(x0) * self.n_steps, self.batch_size):
                ex, step = rows // self.n_steps, rows % self.n_steps
                points = torch.addcmul(base[ex], a[step].view(shape), diff[ex])
                g = passes.gradient(points, score, ex).mul_(w[step].view(shape))
                first = int(ex[0])  # a block spans consecutive inputs: sum its steps per input
                part = g.new_zeros((int(ex[-1]) - first + 1, *x0.shape[1:]))
                part.index_add_(0, (ex - first).to(g.device), g)
                total[first : first + len(part)] += part.double()
            attr = (diff.double() * total).to(x0.dtype)
            ends = []
            for rows in blocks(len(x0), self.batch_size):
                ends.append(
                    passes.scores(x0[rows], score, rows) - passes.scores(base[rows], score, rows)
                )
            delta = attr.flatten(1).double().sum(1) - torch.cat(ends).double()
            return attr, delta

        return run(self.name, model, x, target, self.batch_size, body)

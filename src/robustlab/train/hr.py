"""Holistic robust (HR) training (Bennouna, Lucas & Van Parys 2023, "Certified Robust Neural
Networks: Generalization and Corruption Resistance", arXiv:2303.02251): a distributionally robust
loss against evasion (an inner adversary in the eps-ball), poisoning (a share ``alpha`` of the
training data may be anything) and statistical error (a KL ball of radius ``r``).

The inner problem is the finite program the authors' library hands to a conic solver: with
adversarial losses ``l_i`` of the batch and ``l_{N+1} = max_i l_i`` (the worst case a poisoned
point can take),

    max_{p, q, s}  sum_{i <= N+1} p_i l_i
    s.t.  q_i + s_i = 1/N (i <= N),  q_{N+1} = sum_i s_i <= alpha,  s >= 0,
          KL(q || p) = sum_i q_i log(q_i / p_i) <= r,  p, q in the simplex.

We solve it without a solver. For fixed q, Lagrange duality over p gives the one-dimensional
convex problem ``min_{mu > l_max} mu - exp(-r) prod_i (mu - l_i)**q_i`` with optimal weights
``p_i = lam q_i / (mu - l_i)``, ``lam = exp(-r) prod_i (mu - l_i)**q_i``. The objective is concave
in q, so by the minimax theorem the optimal q minimises ``sum_i q_i log(mu - l_i)`` for every mu
at once: it moves the share alpha from the smallest losses to the worst case. mu is found by
bisection on the derivative ``1 - lam sum_i q_i / (mu - l_i)`` (increasing in mu).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.train.adversary import pgd
from robustlab.train.methods import StepOutput, _correct, register


def check_hr(alpha: float, r: float) -> None:
    if not 0 <= alpha < 1:
        raise RobustlabError(f"alpha (the poisoning share) must be in [0, 1); found {alpha}")
    if not (r >= 0 and math.isfinite(r)):
        raise RobustlabError(f"r (the KL radius) must be finite and >= 0; found {r}")


def poisoned_empirical(losses: Tensor, alpha: float) -> Tensor:
    """q: the empirical weights 1/N less the share ``alpha`` taken from the smallest losses, and
    that share on the worst case (last entry): (N + 1,)."""
    n = len(losses)
    q = torch.full((n + 1,), 1.0 / n, dtype=torch.float64)
    q[n] = 0.0
    left = alpha
    for i in torch.argsort(losses, stable=True).tolist():
        if left <= 0:
            break
        take = min(q[i].item(), left)
        q[i] -= take
        left -= take
    q[n] = alpha - max(left, 0.0)
    return q.clamp_min(0.0)


def hr_weights(losses: Tensor, alpha: float = 0.05, r: float = 0.1, iters: int = 200) -> Tensor:
    """The optimal p of the HR inner problem for the batch ``losses`` (N,): weights (N + 1,),
    the last one on the worst case ``max(losses)``; ``p . [losses, max]`` is the HR loss."""
    check_hr(alpha, r)
    ell = losses.detach().to(torch.float64).cpu()
    if ell.dim() != 1 or len(ell) == 0 or not torch.isfinite(ell).all():
        raise RobustlabError(
            f"expected a non-empty vector of finite losses; found {tuple(ell.shape)}"
        )
    q = poisoned_empirical(ell, alpha)
    lv = torch.cat([ell, ell.max().view(1)])
    top = float(lv.max())
    spread = top - float(ell.min())
    if r == 0 or spread <= 1e-12 * (1 + abs(top)):
        return q  # KL radius 0: p = q; equal losses: every p gives the same value
    on = q > 0
    qs, ls = q[on], lv[on]

    def log_h(t: float) -> float:  # log of lam * sum q_i / (mu - l_i) at mu = top + t
        d = (top + t) - ls
        return -r + float((qs * torch.log(d)).sum()) + math.log(float((qs / d).sum()))

    lo, hi = math.log(spread * 1e-12), math.log(spread)
    while log_h(math.exp(lo)) < 0 and lo > math.log(spread) - 600:
        lo -= 10.0  # the root lies closer to the largest loss
    while log_h(math.exp(hi)) > 0:  # the derivative of the dual is positive beyond the root
        hi += 2.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if log_h(math.exp(mid)) > 0 else (lo, mid)
        if hi - lo < 1e-15:
            break
    d = (top + math.exp(hi)) - ls
    lam = math.exp(-r + float((qs * torch.log(d)).sum()))
    p = torch.zeros_like(q)
    p[on] = lam * qs / d
    return p / p.sum()


def hr_loss(losses: Tensor, alpha: float, r: float) -> Tensor:
    """The HR loss of a batch: ``sum_i p_i l_i + p_{N+1} max_i l_i`` with the optimal p held fixed
    (its gradient is the gradient of the inner maximum, by Danskin's theorem)."""
    w = hr_weights(losses, alpha, r).to(losses.dtype).to(losses.device)
    return (w[:-1] * losses).sum() + w[-1] * losses.max()


@register("hr")
@dataclass(frozen=True)
class HR:
    """Holistic robust training (Bennouna, Lucas & Van Parys 2023, arXiv:2303.02251): the HR loss
    over the batch's PGD losses at the evasion radius eps (Linf, as PGD-AT), protecting against a
    poisoned share ``alpha`` and a KL ball of radius ``r`` (the paper's library defaults)."""

    alpha: float = 0.05
    r: float = 0.1
    steps: int = 10
    step_size: float | None = None

    def __post_init__(self) -> None:
        check_hr(self.alpha, self.r)

    def step(self, model, x, y, ctx):
        xa = x
        if ctx.eps > 0:
            xa = pgd(model, x, y, ctx.threat(), steps=self.steps, step_size=self.step_size,
                     generator=ctx.generator)  # fmt: skip
        logits = model(xa)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        return StepOutput(
            hr_loss(losses, self.alpha, self.r),
            _correct(model, x, y),
            robust_correct=logits.detach().argmax(1) == y,
        )

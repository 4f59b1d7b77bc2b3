"""Carlini-Wagner L2 attack (Carlini & Wagner 2017, arXiv:1608.04644): tanh reparametrisation onto
the input domain, Adam on ||delta||^2 + c * f, binary search on c."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import geometry, lp_norm, margin_loss, register
from robustlab.threat import ThreatModel


@register("cw")
@dataclass(frozen=True)
class CarliniWagnerL2:
    """Carlini-Wagner L2 (Carlini & Wagner 2017, arXiv:1608.04644).

    x = lo + (hi - lo) (tanh(w) + 1) / 2 keeps every iterate in the threat model's input domain.
    Minimises ||x - x0||_2^2 + c max(z_y - max_{j!=y} z_j, -confidence) with Adam; c starts at
    ``initial_const`` and is binary-searched per example (x10 while no success). Returns the
    smallest adversarial point found, projected onto the threat model (a point whose smallest
    adversarial lies outside the threat model is not broken). With ``stop_at_eps`` an example
    stops once an adversarial point inside an L2 ball's radius is found.
    """

    steps: int = 100
    search_steps: int = 9
    initial_const: float = 1e-2
    lr: float = 1e-2
    confidence: float = 0.0
    abort_early: bool = True
    stop_at_eps: bool = True
    seed: int = 0

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        geo = geometry(threat, x)
        lo, hi = geo.lo, geo.hi
        span = hi - lo
        n = len(x)
        inside = ((x - lo) / span * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w0 = torch.atanh(inside)
        const = torch.full((n,), self.initial_const, dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, torch.inf)
        best_d = torch.full_like(const, torch.inf)
        best = x.clone()
        radius = geo.eps if (geo.norm == "2" and self.stop_at_eps) else None
        todo = torch.arange(n, device=x.device)
        for _ in range(self.search_steps):
            if radius is not None:
                todo = todo[best_d[todo] > radius]
            if len(todo) == 0:
                break
            x0, y0, c = x[todo], y[todo], const[todo]
            lo_t = lo[todo] if isinstance(lo, Tensor) else lo
            sp_t = span[todo] if isinstance(span, Tensor) else span
            w = w0[todo].clone()
            m, v = torch.zeros_like(w), torch.zeros_like(w)
            success = torch.zeros(len(todo), dtype=torch.bool, device=x.device)
            prev = torch.inf
            for t in range(1, self.steps + 1):
                w.requires_grad_(True)
                with torch.enable_grad():
                    xa = lo_t + sp_t * (torch.tanh(w) + 1) / 2
                    logits = model(xa)
                    f = (-margin_loss(logits, y0)).clamp_min(-self.confidence)
                    dist = (xa - x0).flatten(1).pow(2).sum(1)
                    loss = dist + c * f
                    (g,) = torch.autograd.grad(loss.sum(), w)
                with torch.no_grad():
                    xa = xa.detach()
                    adv = -margin_loss(logits.detach(), y0) < -self.confidence
                    d2 = lp_norm(xa - x0, "2")
                    better = adv & (d2 < best_d[todo])
                    best[todo[better]] = xa[better]
                    best_d[todo[better]] = d2[better]
                    success |= adv
                    m = 0.9 * m + 0.1 * g
                    v = 0.999 * v + 0.001 * g * g
                    mh, vh = m / (1 - 0.9**t), v / (1 - 0.999**t)
                    w = (w.detach() - self.lr * mh / (vh.sqrt() + 1e-8)).detach()
                    if self.abort_early and t % max(self.steps // 10, 1) == 0:
                        total = float(loss.sum())
                        if total > prev * 0.9999:
                            break
                        prev = total
            # binary search on c
            up = torch.where(success, torch.minimum(upper[todo], c), upper[todo])
            low = torch.where(success, lower[todo], torch.maximum(lower[todo], c))
            upper[todo], lower[todo] = up, low
            const[todo] = torch.where(torch.isfinite(up), (low + up) / 2, c * 10)
        return threat.project(x, best)

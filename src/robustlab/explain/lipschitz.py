"""Lipschitz and sensitivity estimates, and the margin / Lipschitz radius (Tsuzuku et al. 2018,
arXiv:1802.04034): certified only with a provable global bound."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp

from robustlab.bounds.lipschitz import l2_radius
from robustlab.errors import RobustlabError
from robustlab.explain.base import (
    Passes,
    Target,
    blocks,
    check_inputs,
    check_positive,
    explaining,
    resolve_target,
)
from robustlab.threat import LpBall, parse_norm


def _per_sample_norm(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1)


def jacobian_spectral_norm(
    model: nn.Module, x: Tensor, *, n_iter: int = 20, seed: int = 0, batch_size: int = 512
) -> Tensor:
    """The largest singular value of the Jacobian of the logits at each input (N,): power
    iteration on J^T J with ``torch.func`` (a jvp and a vjp per step). An estimate from below of
    the local L2 Lipschitz constant, not a bound."""
    check_inputs(x)
    check_positive(n_iter=n_iter, batch_size=batch_size)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = []
    with explaining(model):
        for rows in blocks(len(x), batch_size):
            xb = x[rows].detach()
            v = torch.randn(xb.shape, generator=gen, dtype=xb.dtype, device=xb.device)
            _, pullback = vjp(model, xb)
            sigma = torch.zeros(len(xb), dtype=xb.dtype, device=xb.device)
            for _ in range(n_iter):
                v = v / _per_sample_norm(v).clamp_min(1e-30).view(-1, *[1] * (xb.dim() - 1))
                _, u = jvp(model, (xb,), (v,))
                sigma = _per_sample_norm(u)
                (v,) = pullback(u)
            out.append(sigma.detach())
    return torch.cat(out)


@dataclass(frozen=True)
class LocalLipschitz:
    """The largest dual-norm gradient of the target score over samples in an eps-ball."""

    norm: str  # the ball's norm; gradients are measured in its dual norm
    eps: float
    estimate: Tensor  # (N,) max over samples: a lower estimate of the local Lipschitz constant
    mean: Tensor  # (N,) mean over samples
    n_forward: int
    n_backward: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "norm": self.norm,
            "eps": self.eps,
            "estimate": self.estimate.tolist(),
            "mean": self.mean.tolist(),
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "seconds": self.seconds,
        }


def local_lipschitz(
    model: nn.Module,
    x: Tensor,
    eps: float,
    norm: str = "inf",
    *,
    target: Target = None,
    n_samples: int = 32,
    lower: float = 0.0,
    upper: float = 1.0,
    batch_size: int = 512,
    seed: int = 0,
) -> LocalLipschitz:
    """Gradient norms of the target score at ``x`` and ``n_samples`` uniform points of the
    ``norm``-ball of radius ``eps`` around it (in the data range), in the dual norm (L1 for Linf)."""
    check_inputs(x)
    check_positive(n_samples=n_samples, batch_size=batch_size)
    ball = LpBall(parse_norm(norm), eps, lower, upper)
    start = time.perf_counter()
    passes = Passes(model)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x0 = x.detach()
    dual = 1.0 if ball.norm == "inf" else 2.0
    n, m = len(x0), n_samples + 1
    best = torch.zeros(n, dtype=torch.float64)
    total = torch.zeros(n, dtype=torch.float64)
    with explaining(model):
        score, _ = resolve_target(target, passes, x0, batch_size)
        for i in range(0, n, max(1, batch_size // m)):
            rows = torch.arange(i, min(i + max(1, batch_size // m), n))
            pts = torch.cat([x0[rows].unsqueeze(0), ball.sample(x0[rows], n_samples, gen)])
            ex = rows.repeat(m)
            g = passes.gradient(pts.reshape(-1, *x0.shape[1:]), score, ex)
            size = g.flatten(1).norm(p=dual, dim=1).double().view(m, -1)
            best[rows] = size.amax(0).cpu()
            total[rows] = size.mean(0).cpu()
    seconds = time.perf_counter() - start
    return LocalLipschitz(ball.norm, eps, best, total, passes.n_forward, passes.n_backward, seconds)


@dataclass(frozen=True)
class LipschitzRadius:
    """A robustness radius (L2) per input from its logit margin and a Lipschitz constant."""

    radius: Tensor  # (N,) 0 for misclassified inputs
    margin: Tensor  # (N,) logit[y] - max_{j != y} logit[j]
    lipschitz: float | Tensor  # the global bound, or the local estimate per input
    certified: bool  # True only when the radius follows from a provable global bound
    method: str  # "global" | "local"

    def to_dict(self) -> dict:
        lip = self.lipschitz
        return {
            "norm": "2",
            "method": self.method,
            "certified": self.certified,
            "radius": self.radius.tolist(),
            "margin": self.margin.tolist(),
            "lipschitz": lip.tolist() if isinstance(lip, Tensor) else lip,
        }


def lipschitz_radius(
    model: nn.Module, x: Tensor, y: Tensor | None = None, *, method: str = "global"
) -> LipschitzRadius:
    """The L2 radius within which the class of each input cannot change: margin / L_yj per pair
    (y, j). ``method="global"``: L from rigorous per-layer norms (``bounds.l2_radius``: certified,
    margins computed in float64). ``"local"``: sqrt(2) times the Jacobian
    spectral norm at the point (an estimate, not certified)."""
    check_inputs(x)
    if method not in ("global", "local"):
        raise RobustlabError(f"method must be 'global' or 'local'; found {method!r}")
    with explaining(model):
        exact = copy.deepcopy(model).double()
        with torch.no_grad():
            logits = exact(x.detach().double())
    y = logits.argmax(1) if y is None else y.to(torch.long).reshape(-1)
    if y.shape != (len(x),):
        raise RobustlabError(f"expected one label per input ({len(x)}); found {tuple(y.shape)}")
    mine = logits.gather(1, y[:, None])
    others = logits.clone()
    others.scatter_(1, y[:, None], -math.inf)
    margin = (mine[:, 0] - others.amax(1)).cpu()
    if method == "global":
        cert = l2_radius(model, x, y)
        return LipschitzRadius(cert.radius, margin, cert.lipschitz.bound, True, "global")
    sigma = jacobian_spectral_norm(model, x).double().cpu()
    radius = torch.where(margin > 0, margin / (math.sqrt(2) * sigma.clamp_min(1e-300)), 0.0)
    return LipschitzRadius(radius, margin, sigma, False, "local")

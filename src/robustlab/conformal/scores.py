"""Non-conformity scores: the LAC score ``1 - softmax(f(x))_y`` (Sadinle et al. 2019), its
Gaussian smoothing estimated by Monte Carlo (RSCP, Gendler et al. 2022), and sound lower bounds of
it over a threat model from bounds on the logit differences (VRCP, Jeary et al. 2024)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.bounds import compute_bounds
from robustlab.threat import ThreatModel


def lac_scores(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """``1 - softmax(model(x))`` for every label: (N, K), float64."""
    with torch.no_grad():
        out = [
            torch.softmax(model(x[i : i + batch_size]).double(), 1)
            for i in range(0, len(x), batch_size)
        ]
    return 1 - torch.cat(out)


def smoothed_scores(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n: int,
    *,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte Carlo mean of the LAC score under ``N(0, sigma^2 I)`` noise, ``n`` draws per input:
    (N, K) float64 (the estimate of E[1 - softmax(f(x + delta))_y])."""
    total, k = len(x) * n, None
    sums: Tensor | None = None
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            owner = torch.arange(start, stop, device=x.device) // n
            noise = torch.randn((stop - start, *x.shape[1:]), generator=generator, dtype=x.dtype,
                                device=x.device)  # fmt: skip
            p = torch.softmax(model(noise.mul_(sigma).add_(x[owner])).double(), 1)
            if sums is None:
                k = p.shape[1]
                sums = torch.zeros(len(x), k, dtype=torch.float64, device=x.device)
            sums.index_add_(0, owner, p)
    assert sums is not None
    return 1 - sums / n


def pair_matrix(k: int) -> Tensor:
    """C with rows ``e_j - e_y`` for every (y, j): shape (K * K, K); the rows y == j are zero."""
    eye = torch.eye(k, dtype=torch.float64)
    return (eye[None, :, :] - eye[:, None, :]).reshape(k * k, k)


def lac_lower_bounds(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    method: str = "crown",
    batch_size: int = 32,
) -> Tensor:
    """Sound lower bounds of the LAC score of every label over the threat model around each x:
    (N, K) float64. From lower bounds l_yj of ``z_j - z_y`` (``compute_bounds``),
    ``softmax_y <= 1 / (1 + sum_{j != y} exp(l_yj))``, so the score is at least
    ``sigmoid(logsumexp_{j != y} l_yj)``."""

    k = int(model(x[:1]).shape[1])
    C = pair_matrix(k)
    off = ~torch.eye(k, dtype=torch.bool)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        b = compute_bounds(model, (threat, xb), method, C.expand(len(xb), *C.shape),
                           bound_upper=False).lower.double().view(len(xb), k, k)  # fmt: skip
        masked = torch.where(off, b, torch.full((), -torch.inf, dtype=b.dtype))
        out.append(torch.sigmoid(torch.logsumexp(masked, 2)))
    return torch.cat(out)

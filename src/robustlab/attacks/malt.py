"""Target selection for targeted attacks: by confidence (AutoAttack) or by MALT's mesoscopic
almost-linearity score (Melamed, Yehudai & Shamir 2024, arXiv:2407.02240)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    RUNS_PER_BLOCK,
    logits_and_jacobian,
    mean_logits,
    target_ranking,
)
from robustlab.errors import RobustlabError

MALT_CANDIDATES = (
    100  # classes scored per point, the most confident ones (bounds the Jacobian cost)
)


def dual_norm(grad: Tensor, norm: str, start_dim: int = 1) -> Tensor:
    """The dual norm of gradients over the axes from ``start_dim`` on: L1 for an Linf threat, L2
    for L2 (how much a perturbation of norm 1 can change a linear function)."""
    flat = grad.flatten(start_dim)
    return flat.abs().sum(-1) if norm == "inf" else flat.norm(dim=-1)


def malt_scores(
    model: nn.Module, x: Tensor, y: Tensor, classes: Tensor, norm: str, eot: int = 1
) -> tuple[Tensor, Tensor]:
    """MALT's score of each class in ``classes`` (N, m): |z_y - z_t| / ||grad_x (z_y - z_t)||_*,
    the distance to the decision boundary between y and t of the model linearised at x (exact for
    a linear model). Returns (scores (N, m), logits (N, K)).

    The Jacobian rows come from one forward and backward pass over the batch replicated per class,
    in blocks that keep the replicated batch near ``RUNS_PER_BLOCK`` input elements; logits and
    Jacobians averaged over ``eot`` passes (randomized models)."""
    n, m = classes.shape
    per = max(1, RUNS_PER_BLOCK // max(1, n * x[0].numel()) - 1)
    scores, logits = [], None
    for j in range(0, m, per):
        block = classes[:, j : j + per]
        out, jac = _mean_jacobian(model, x, torch.cat([y[:, None], block], 1), eot)
        logits = out if logits is None else logits
        diff = jac[:, :1] - jac[:, 1:]  # (N, b, *x): gradients of z_y - z_t
        gap = out.gather(1, y[:, None]) - out.gather(1, block)
        scores.append(gap.abs() / dual_norm(diff, norm, 2).clamp_min(1e-30))
    return torch.cat(scores, 1), logits


def _mean_jacobian(model, x, classes, eot) -> tuple[Tensor, Tensor]:
    out, jac = logits_and_jacobian(model, x, classes)
    for _ in range(eot - 1):
        o, j = logits_and_jacobian(model, x, classes)
        out, jac = out + o, jac + j
    return out / eot, jac / eot


def malt_ranking(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str,
    candidates: int = MALT_CANDIDATES,
    eot: int = 1,
) -> tuple[Tensor, Tensor]:
    """The classes other than the label, the ``candidates`` most confident ones ordered by MALT's
    score (smallest first; the nearest linearised boundary), the others after them by confidence
    (N, K - 1); and their scores (infinite for the classes not scored)."""
    others = target_ranking(mean_logits(model, x, eot), y)
    top = others[:, : max(1, candidates)]
    scores, _ = malt_scores(model, x, y, top, norm, eot)
    scores, order = scores.sort(dim=1, stable=True)
    rest = others[:, top.shape[1] :]
    return (
        torch.cat([top.gather(1, order), rest], 1),
        torch.cat([scores, torch.full(rest.shape, torch.inf, dtype=scores.dtype)], 1),
    )


TARGETINGS = ("confidence", "malt")


def rank_targets(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, targeting: str, eot: int = 1
) -> tuple[Tensor, Tensor | None]:
    """The target classes of each point in the order a targeted attack tries them (N, K - 1),
    and their MALT scores (None when ranked by confidence)."""
    if targeting == "malt":
        return malt_ranking(model, x, y, norm, eot=eot)
    if targeting == "confidence":
        return target_ranking(mean_logits(model, x, eot), y), None
    raise RobustlabError(f"targeting must be one of {', '.join(TARGETINGS)}; found {targeting!r}")

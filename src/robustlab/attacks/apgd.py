"""Auto-PGD (Croce & Hein 2020, arXiv:2003.01690): step-size schedule with checkpoints, momentum,
step halving and restart from the best point."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    Geometry,
    Objective,
    Targeted,
    ascent_direction,
    check_classes,
    eot_gradient,
    geometry,
    get_loss,
    register,
    steps_alias,
    view_per_sample,
)
from robustlab.threat import ThreatModel


def checkpoint_lengths(n_iter: int) -> tuple[int, int, int]:
    """AutoAttack's checkpoints p_j: the first after 22% of the iterations, each next interval 3%
    shorter, never shorter than 6%. Returns (first interval, decrement, minimum interval)."""
    return max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)


def _grad(model, xa, y, target, objective, eot) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Loss, gradient, whether the (mean) logits misclassify, and their margin z_y - max z_j."""
    loss, grad, logits = eot_gradient(model, xa, y, target, objective, eot)
    other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
    return loss, grad, logits.argmax(1) != y, logits.gather(1, y[:, None])[:, 0] - other


def apgd_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    threat: ThreatModel,
    objective: Objective | Targeted,
    *,
    target: Tensor | None,
    n_iter: int,
    rho: float,
    gen: torch.Generator,
    group: Tensor | None = None,
    n_points: int | None = None,
    eot: int = 1,
) -> tuple[Tensor, Tensor]:
    """APGD runs from random starts, one per row of ``x0``; ``group`` maps each run to its point
    (default: one run per point). A point is broken as soon as any of its runs misclassifies, and
    all its runs stop then (the other runs' trajectories do not change). ``eot`` > 1: gradients,
    losses and logits averaged over that many forward passes (randomized models).

    Returns (broken, points) per point: the first misclassified iterate of each broken point; for
    the others, the iterate of any of its runs with the smallest logit margin (the closest to the
    decision boundary)."""
    n_runs = len(x0)
    dev = x0.device
    group = torch.arange(n_runs, device=dev) if group is None else group
    n_points = n_runs if n_points is None else n_points
    geo: Geometry = geometry(threat, x0)
    out = torch.empty((n_points, *x0.shape[1:]), dtype=x0.dtype, device=dev)
    broken = torch.zeros(n_points, dtype=torch.bool, device=dev)
    xa = threat.sample(x0, 1, gen)[0]
    loss, grad, wrong, margin = _grad(model, xa, y, target, objective, eot)
    st = {
        "margin": margin, "x_close": xa, "m_close": margin,
        "x0": x0, "y": y, "group": group, "xa": xa, "grad": grad, "loss": loss,
        "x_best": xa, "g_best": grad, "loss_best": loss, "x_prev": xa, "loss_prev": loss,
        "fac": torch.full((n_runs,), 2.0, dtype=x0.dtype, device=dev),  # step = fac * eps
        "n_incr": torch.zeros(n_runs, device=dev), "loss_best_last": loss,
        "reduced_last": torch.ones(n_runs, dtype=torch.bool, device=dev),
    }  # fmt: skip
    if target is not None:
        st["target"] = target
    if isinstance(geo.eps, Tensor):
        st["eps"] = geo.eps
    k, decr, k_min = checkpoint_lengths(n_iter)
    since = 0
    for i in range(n_iter + 1):
        if bool(wrong.any()):
            hit = st["group"][wrong]
            out[hit] = st["xa"][wrong]
            broken[hit] = True
            keep = ~broken[st["group"]]
            st = {key: v[keep] for key, v in st.items()}
            if len(st["group"]) == 0:
                break
        xa, grad, loss = st["xa"], st["grad"], st["loss"]
        nearer = st["margin"] < st["m_close"]  # the iterate closest to the decision boundary
        st["x_close"] = torch.where(view_per_sample(nearer, xa), xa, st["x_close"])
        st["m_close"] = torch.where(nearer, st["margin"], st["m_close"])
        if i > 0:  # track the best point and the checkpoint conditions
            st["n_incr"] = st["n_incr"] + (loss > st["loss_prev"])
            st["loss_prev"] = loss
            imp = loss > st["loss_best"]
            impv = view_per_sample(imp, xa)
            st["x_best"] = torch.where(impv, xa, st["x_best"])
            st["g_best"] = torch.where(impv, grad, st["g_best"])
            st["loss_best"] = torch.where(imp, loss, st["loss_best"])
            since += 1
            if since == k:
                oscillating = st["n_incr"] <= k * rho
                stalled = ~st["reduced_last"] & (st["loss_best_last"] >= st["loss_best"])
                reduce = oscillating | stalled
                st["reduced_last"], st["loss_best_last"] = reduce, st["loss_best"]
                st["fac"] = torch.where(reduce, st["fac"] / 2, st["fac"])
                rv = view_per_sample(reduce, xa)
                xa = torch.where(rv, st["x_best"], xa)
                grad = torch.where(rv, st["g_best"], grad)
                st["n_incr"] = torch.zeros_like(st["n_incr"])
                since, k = 0, max(k - decr, k_min)
        if i == n_iter:
            break
        with torch.no_grad():
            a = 0.75 if i > 0 else 1.0
            x0 = st["x0"]
            step = view_per_sample(st["fac"], xa) * st.get("eps", geo.eps)
            z = threat.project(x0, xa + step * ascent_direction(grad, geo.norm))
            x_new = threat.project(x0, xa + a * (z - xa) + (1 - a) * (xa - st["x_prev"]))
            st["x_prev"], st["xa"] = xa, x_new
        st["loss"], st["grad"], wrong, st["margin"] = _grad(
            model, x_new, st["y"], st.get("target"), objective, eot
        )
    left = ~broken
    if bool(left.any()):
        grp, m = st["group"], st["m_close"]
        m = torch.where(torch.isnan(m), torch.inf, m)
        low = torch.full((n_points,), torch.inf, dtype=m.dtype, device=dev)
        low = low.scatter_reduce(0, grp, m, "amin")
        rows = torch.arange(len(grp), device=dev)
        pick = torch.full((n_points,), len(grp), device=dev).scatter_reduce(
            0, grp, torch.where(m == low[grp], rows, len(grp)), "amin"
        )
        out[left] = st["x_close"][pick[left]]
    return broken, out


@register("apgd-ce")
@dataclass(frozen=True)
class APGD:
    """Auto-PGD (Croce & Hein 2020, arXiv:2003.01690), untargeted, Linf or L2.

    AutoAttack's schedule: step 2 eps, momentum 0.75, checkpoints p_j where the step is halved
    if the loss oscillated or stalled, restarting from the best point. ``eot`` > 1 averages each
    gradient over that many forward passes (randomized models).
    """

    n_iter: int = 100
    restarts: int = 1
    loss: str | Objective = "ce"  # "ce" | "dlr" | "margin" | callable (logits, y) -> (N,)
    rho: float = 0.75
    seed: int = 0
    eot: int = 1  # forward passes per gradient (expectation over transformation)

    steps: int | None = field(default=None, repr=False, compare=False)  # alias of n_iter

    def __post_init__(self) -> None:
        steps_alias(self)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        objective = get_loss(self.loss)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x.clone()
        todo = torch.arange(len(x), device=x.device)
        if isinstance(self.loss, str) and self.loss != "ce":
            with torch.no_grad():
                check_classes(self.loss, model(x[:1]).shape[1])
        for r in range(max(1, self.restarts)):
            if len(todo) == 0:
                break
            broken, adv = apgd_run(
                model, x[todo], y[todo], threat, objective,
                target=None, n_iter=self.n_iter, rho=self.rho, gen=gen, eot=self.eot,
            )  # fmt: skip
            if r == 0:
                best[todo] = adv
            else:
                best[todo[broken]] = adv[broken]
            todo = todo[~broken]
        return best


@register("apgd-dlr")
@dataclass(frozen=True)
class APGDDLR(APGD):
    """Auto-PGD on the DLR loss (Croce & Hein 2020, arXiv:2003.01690)."""

    loss: str | Objective = "dlr"

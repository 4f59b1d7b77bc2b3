"""Fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial examples with
a fast adaptive boundary attack", arXiv:1907.02044), untargeted and targeted (FAB-T)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    geometry,
    logits_and_jacobian,
    lp_norm,
    query_function,
    register,
    steps_alias,
    target_blocks,
    view_per_sample,
)
from robustlab.attacks.malt import rank_targets
from robustlab.threat import ThreatModel


def hyperplane_projection(
    t: Tensor, w: Tensor, b: Tensor, lo: Tensor | float, hi: Tensor | float, norm: str
) -> Tensor:
    """The minimal Linf or L2 displacement d with w.(t + d) = b and lo <= t + d <= hi, row-wise
    (t, w: (M, D); b: (M,)). Where the box cannot reach the hyperplane, the box corner closest to it.

    Moving coordinate i by m_i towards the side that shrinks |w.z - b| gains |w_i| m_i, with
    m_i <= room_i. Linf: m_i = min(lam, room_i); L2: m_i = min(lam |w_i|, room_i). The total gain
    g(lam) = sum_i e_i min(lam, k_i) is concave, increasing and piecewise linear, so Newton's
    method from lam = 0 stays below the root and reaches it exactly in a few steps (no sort).
    """
    r = (w * t).sum(1) - b
    w = w * torch.where(r >= 0, 1.0, -1.0).to(w)[:, None]  # now decrease w.z by |r|
    r = r.abs()
    room = torch.where(w > 0, t - lo, hi - t).clamp_min(0)
    aw = w.abs()
    if norm == "inf":
        knee, e = room, aw
    else:
        knee, e = torch.where(aw > 0, room / aw.clamp_min(1e-30), 0.0), aw * aw
    lam = torch.zeros_like(r)
    todo = torch.arange(len(r), device=r.device)
    kt, et, rt = knee, e, r
    for _ in range(_NEWTON_STEPS):
        lam_t = lam[todo][:, None]
        gain = (et * torch.minimum(kt, lam_t)).sum(1)
        slope = (et * (kt > lam_t)).sum(1)
        short = rt - gain
        reached = short <= 1e-6 * rt
        done = reached | (slope <= 0)
        step = torch.where(slope > 0, short.clamp_min(0) / slope.clamp_min(1e-30), 0.0)
        lam[todo] = torch.where(done & ~reached, torch.inf, lam_t[:, 0] + step)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = ~done
            todo, kt, et, rt = todo[keep], kt[keep], et[keep], rt[keep]
    lam = lam[:, None]
    move = torch.minimum(lam if norm == "inf" else lam * aw, room)
    return torch.where(aw > 0, -torch.sign(w) * move, 0.0)


_NEWTON_STEPS = 100


def _diff_and_grad(
    model, x1, y, target, n_classes: int, norm: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The logit difference f to the target class (f < 0 while not adversarial), its gradient
    (flattened) and the predicted labels. Untargeted: the class whose linearised decision
    boundary is closest."""
    idx = torch.arange(len(y), device=y.device)
    if target is not None:
        xg = x1.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            diff = logits[idx, target] - logits[idx, y]
            (grad,) = torch.autograd.grad(diff.sum(), xg)
        return diff.detach(), grad.flatten(1), logits.detach().argmax(1)
    classes = torch.arange(n_classes, device=y.device).expand(len(y), n_classes)
    logits, jac = logits_and_jacobian(model, x1, classes)
    jac = jac.flatten(2)
    df = logits - logits[idx, y][:, None]
    dg = jac - jac[idx, y][:, None]
    dual = dg.abs().sum(2) if norm == "inf" else dg.norm(dim=2)
    dist = df.abs() / (dual + 1e-12)
    dist[idx, y] = torch.inf
    best = dist.argmin(1)
    return df[idx, best], dg[idx, best], logits.argmax(1)


def fab_run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    target: Tensor | None,
    n_iter: int,
    alpha_max: float,
    eta: float,
    beta: float,
    random_start: bool,
    stop_at_eps: bool,
    gen: torch.Generator,
    group: Tensor | None = None,
    n_points: int | None = None,
) -> tuple[Tensor, Tensor]:
    """FAB runs, one per row of ``x0``; ``group`` maps each run to its point (default: one run per
    point). Returns per point the distance of the closest adversarial point found (inf if none)
    and that point. With ``stop_at_eps`` all runs of a point stop once one finds an adversarial
    point inside the threat model."""
    n_runs, dev = len(x0), x0.device
    group = torch.arange(n_runs, device=dev) if group is None else group
    n_points = n_runs if n_points is None else n_points
    geo = geometry(threat, x0)
    res = torch.full((n_points,), torch.inf, dtype=x0.dtype, device=dev)
    adv = torch.empty((n_points, *x0.shape[1:]), dtype=x0.dtype, device=dev)
    adv[group] = x0
    with torch.no_grad():
        n_classes = model(x0[:1]).shape[1]
    x1 = x0 + 0.5 * (threat.sample(x0, 1, gen)[0] - x0) if random_start else x0.clone()
    st = {"x0": x0, "x1": x1, "y": y, "group": group}
    if target is not None:
        st["target"] = target
    if isinstance(geo.lo, Tensor):
        st["lo"], st["hi"] = geo.lo, geo.hi
    # Runs whose point has no adversarial example yet learn whether their new point is one from
    # the gradient pass taken there (no separate check); runs already refining one, where most
    # steps cross the boundary and get pulled back, check it by a forward pass first.
    st["f"], st["w"], _ = _diff_and_grad(model, x1, y, target, n_classes, geo.norm)
    check = query_function(model, x0)
    for it in range(n_iter):
        x0, x1, y, grp = st["x0"], st["x1"], st["y"], st["group"]
        with torch.no_grad():
            m = len(grp)
            flat1, flat0, w = x1.flatten(1), x0.flatten(1), st["w"]
            b = -st["f"] + (w * flat1).sum(1)
            lo, hi = st.get("lo", geo.lo), st.get("hi", geo.hi)
            lo2 = torch.cat([lo.flatten(1)] * 2) if isinstance(lo, Tensor) else lo
            hi2 = torch.cat([hi.flatten(1)] * 2) if isinstance(hi, Tensor) else hi
            d = hyperplane_projection(
                torch.cat([flat1, flat0]), torch.cat([w, w]), torch.cat([b, b]), lo2, hi2, geo.norm
            )
            a = lp_norm(d, geo.norm).clamp_min(1e-8)
            alpha = (a[:m] / (a[:m] + a[m:])).clamp(0.0, alpha_max)[:, None]
            x1 = (flat1 + eta * d[:m]) * (1 - alpha) + (flat0 + eta * d[m:]) * alpha
            x1 = torch.clamp(x1.view_as(x0), lo, hi)
            back = x0 + (x1 - x0) * beta  # where an adversarial step is pulled back to
        last = it == n_iter - 1
        refine = res[grp] < torch.inf if not last else torch.ones(m, dtype=torch.bool, device=dev)
        is_adv = torch.zeros_like(refine)
        if bool(refine.any()):
            rows = refine.nonzero().squeeze(1)
            is_adv[rows] = check(x1[rows]).argmax(1) != y[rows]
        nxt = torch.where(view_per_sample(is_adv, x1), back, x1)
        fresh = None
        if not last:
            st["f"], st["w"], pred = _diff_and_grad(
                model, nxt, y, st.get("target"), n_classes, geo.norm
            )
            fresh = ~refine & (pred != y)  # searching runs whose new point is adversarial
            is_adv = is_adv | fresh
            nxt = torch.where(view_per_sample(fresh, x1), back, nxt)
        st["x1"] = nxt
        if not bool(is_adv.any()):
            continue
        with torch.no_grad():
            dist = torch.where(is_adv, lp_norm(x1 - x0, geo.norm), torch.inf)
            new_res = res.scatter_reduce(0, grp, dist, "amin")
            win = is_adv & (dist == new_res[grp]) & (dist < res[grp])
            adv[grp[win]] = x1[win]
            res = new_res
        if stop_at_eps:
            done = res < torch.inf if geo.is_box else res <= geo.eps
            keep = ~done[grp]
            if not bool(keep.all()):
                st = {key: v[keep] for key, v in st.items()}
                fresh = fresh[keep] if fresh is not None else None
                if len(st["group"]) == 0:
                    break
        if fresh is not None and bool(fresh.any()):  # the gradient at the pulled-back points
            sub = fresh.nonzero().squeeze(1)
            t_sub = st["target"][sub] if target is not None else None
            f_sub, w_sub, _ = _diff_and_grad(
                model, st["x1"][sub], st["y"][sub], t_sub, n_classes, geo.norm
            )
            st["f"], st["w"] = st["f"].index_put((sub,), f_sub), st["w"].index_put((sub,), w_sub)
    return res, adv


@register("fab")
@dataclass(frozen=True)
class FAB:
    """Fast adaptive boundary attack (Croce & Hein 2020, arXiv:1907.02044), Linf or L2.

    Minimises the perturbation norm; a point counts once an adversarial point inside the threat
    model is found (``stop_at_eps`` then stops refining it). Untargeted: the closest linearised
    boundary over all classes; ``targeted``: FAB-T, one run per class among the top
    ``n_target_classes`` after the label, ranked by confidence (AutoAttack) or by MALT's score
    (``targeting="malt"``, Melamed et al. 2024), side by side when ``parallel`` (else one target
    after the other, on the points not yet broken).
    """

    n_iter: int = 100
    restarts: int = 1
    targeted: bool = False
    n_target_classes: int = 9
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    stop_at_eps: bool = True
    parallel: bool = True
    seed: int = 0
    targeting: str = "confidence"  # "confidence" | "malt" (targeted only)

    steps: int | None = field(default=None, repr=False, compare=False)  # alias of n_iter

    def __post_init__(self) -> None:
        steps_alias(self)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        geo = geometry(threat, x)
        if self.targeted:
            others, _ = rank_targets(model, x, y, geo.norm, self.targeting)
        best = x.clone()
        res = torch.full((len(x),), torch.inf, dtype=x.dtype, device=x.device)
        if not self.targeted:
            blocks: list[list] = [[None]]
        else:
            ranks = list(range(min(self.n_target_classes, others.shape[1])))
            blocks = target_blocks(ranks, len(x), x[0].numel(), self.parallel)
        for block in blocks:
            for r in range(max(1, self.restarts)):
                found = res < torch.inf if geo.is_box else res <= geo.eps
                todo = (~found if self.stop_at_eps else torch.ones_like(found)).nonzero().squeeze(1)
                if len(todo) == 0:
                    break
                m = len(block)
                target = others[todo][:, block].t().reshape(-1) if self.targeted else None
                dist, adv = fab_run(
                    model, x[todo].repeat(m, *([1] * (x.dim() - 1))), y[todo].repeat(m), threat,
                    target=target, n_iter=self.n_iter, alpha_max=self.alpha_max, eta=self.eta,
                    beta=self.beta, random_start=r > 0, stop_at_eps=self.stop_at_eps, gen=gen,
                    group=torch.arange(len(todo), device=x.device).repeat(m), n_points=len(todo),
                )  # fmt: skip
                better = dist < res[todo]
                best[todo[better]] = adv[better]
                res[todo[better]] = dist[better]
        return threat.project(x, best)


@register("fab-t")
@dataclass(frozen=True)
class FABT(FAB):
    """Targeted FAB (FAB-T, Croce & Hein 2020, arXiv:1907.02044) over the top-k classes, as in
    AutoAttack."""

    targeted: bool = True

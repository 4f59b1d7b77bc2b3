"""Audit stage: adversarial examples at the headline eps next to the clean inputs, with the
model's predictions and the perturbation."""

from __future__ import annotations

import torch

from robustlab.attacks import predict, suite_attacks
from robustlab.audit import figures
from robustlab.audit.budget import Deadline
from robustlab.audit.runner import Context, Progress
from robustlab.inputs import frozen
from robustlab.threat import LpBall


def _pick(ctx: Context, m: int) -> torch.Tensor:
    """Points the attack stage broke at the headline eps first, then other correct points."""
    correct = ctx.correct
    if correct is None:
        correct = predict(ctx.model.module, ctx.data.x) == ctx.data.y
    robust = (ctx.robust or {}).get(ctx.headline)
    broken = torch.zeros_like(correct)
    if robust is not None:
        broken[: len(robust)] = correct[: len(robust)] & ~robust
    first = broken.nonzero().squeeze(1)
    rest = (correct & ~broken).nonzero().squeeze(1)
    return torch.cat([first, rest])[:m]


def adversarial_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """Run the suite's attacks in order on a few points at the headline eps; keep the first
    adversarial example found per point (inside the threat model, misclassified by a forward
    pass); only the points broken are shown."""
    d, e = ctx.data, ctx.headline
    idx = _pick(ctx, ctx.profile.n_adversarial)
    if len(idx) == 0 or e <= 0:
        return {"eps": e, "items": [], "png": None, "note": "no correctly classified example"}
    x0, y0 = d.x[idx], d.y[idx]
    k = ctx.num_classes or int(ctx.model.module(x0[:1]).shape[1])
    threat = LpBall(ctx.norm, e, d.lower, d.upper)
    x_adv, by = x0.clone(), [None] * len(idx)
    todo = torch.ones(len(idx), dtype=torch.bool)
    for name, attack in suite_attacks(ctx.profile.suite, k, seed=ctx.seed):
        if not todo.any() or not deadline.fits(0):
            break
        say(f"{name} on {int(todo.sum())} points at eps {e:g}", False)
        sel = todo.nonzero().squeeze(1)
        with frozen(ctx.model.module):
            cand = attack(ctx.model.module, x0[sel], y0[sel], threat).detach()
        ok = threat.contains(x0[sel], cand) & torch.isfinite(cand).flatten(1).all(1)
        wrong = predict(ctx.model.module, cand) != y0[sel]
        x_adv[sel] = torch.where(ok.view(-1, *[1] * (cand.dim() - 1)), cand, x_adv[sel])
        for j, i in enumerate(sel.tolist()):
            if ok[j] and wrong[j]:
                by[i] = name
                todo[i] = False
    p_clean = predict(ctx.model.module, x0)
    p_adv = predict(ctx.model.module, x_adv)
    keep = [i for i in range(len(idx)) if by[i] is not None and int(p_adv[i]) != int(y0[i])]
    if not keep:  # only broken examples are shown: an unbroken one is no adversarial example
        return {"eps": e, "norm": ctx.norm, "items": [], "png": None,
                "note": f"no attack broke the {len(idx)} examples tried at eps {e:g}"}  # fmt: skip
    idx, x0, y0, x_adv, p_clean, p_adv = (v[keep] for v in (idx, x0, y0, x_adv, p_clean, p_adv))
    by = [by[i] for i in keep]
    delta = (x_adv - x0).flatten(1)
    scale = float(delta.abs().max()) or 1.0
    rows: list[list] = [[], [], []]
    items = []
    for i in range(len(idx)):
        rows[0].append({"img": figures.to_image(x0[i], d.lower, d.upper),
                        "title": f"#{int(idx[i])} label {int(y0[i])}\npred {int(p_clean[i])}"})  # fmt: skip
        rows[1].append({"img": figures.to_image(x_adv[i], d.lower, d.upper),
                        "title": f"pred {int(p_adv[i])}\n{by[i]}", "color": "#d62728"})  # fmt: skip
        pert = figures.to_image(delta[i].view_as(x0[i]), -scale, scale)  # 0.5: unchanged
        title = f"Linf {float(delta[i].abs().max()):.3g}"
        rows[2].append({"img": pert, "title": title} if pert.ndim == 3 else
                       {"img": 2 * pert - 1, "cmap": "RdBu_r", "vmin": -1, "vmax": 1, "title": title})  # fmt: skip
        items.append({
            "index": int(idx[i]), "label": int(y0[i]), "clean_prediction": int(p_clean[i]),
            "adversarial_prediction": int(p_adv[i]), "broken": True, "attack": by[i],
            "linf": float(delta[i].abs().max()), "l2": float(delta[i].norm()),
        })  # fmt: skip
    labels = ["clean", f"adversarial\neps {e:g}", "perturbation\n(scaled)"]
    return {"eps": e, "norm": ctx.norm, "items": items, "png": figures.panel_grid(rows, labels)}

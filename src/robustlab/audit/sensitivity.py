"""Audit stage: a sensitivity summary on a few examples: saliency (Simonyan et al. 2014,
arXiv:1312.6034), Integrated Gradients (Sundararajan et al. 2017, arXiv:1703.01365) and
SmoothGrad heat-maps, how concentrated they are, and how much the methods agree."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from robustlab.audit import figures
from robustlab.audit.budget import Deadline
from robustlab.audit.runner import Context, Progress
from robustlab.explain import get_explainer
from robustlab.explain.base import REGISTRY
from robustlab.explain.sharded import explain_sharded
from robustlab.inputs import frozen

TOP = 0.1  # concentration: share of |attribution| in the top 10% of input features


def _options(method: str, ctx: Context) -> dict:
    if method == "integrated-gradients":
        return {"n_steps": ctx.profile.ig_steps}
    if method == "smoothgrad":
        return {"seed": ctx.seed}
    return {}


def _concentration(a: torch.Tensor) -> float:
    flat = a.abs().flatten(1)
    k = max(1, int(round(TOP * flat.shape[1])))
    total = flat.sum(1).clamp_min(1e-30)
    return float((flat.topk(k, dim=1).values.sum(1) / total).mean())


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Mean Spearman rank correlation of |a| and |b| per example."""

    vals = []
    for u, v in zip(a.abs().flatten(1).numpy(), b.abs().flatten(1).numpy(), strict=True):
        if np.ptp(u) > 0 and np.ptp(v) > 0:
            vals.append(float(spearmanr(u, v).statistic))
    return float(np.mean(vals)) if vals else None


def sensitivity_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """Heat-maps of the predicted class for the first examples, one row per method."""
    p, d = ctx.profile, ctx.data
    m = min(ctx.n, p.n_explain)
    x, y = d.x[:m], d.y[:m]
    maps, methods, out_methods = {}, [], []
    for method in p.explain_methods:
        if maps and not deadline.fits(0):
            break
        say(f"{method} on {m} examples", False)
        explainer = get_explainer(method, **_options(method, ctx))
        with frozen(ctx.model.module):
            r = explain_sharded(explainer, ctx.model.module, x, backend=ctx.backend)
        a = r.attributions.detach().double()
        maps[method] = a
        methods.append(method)
        rec = {
            "method": method,
            "concentration_top10": _concentration(a),
            "n_forward": r.n_forward,
            "n_backward": r.n_backward,
            "seconds": round(r.seconds, 3),
        }
        if method == "saliency":
            dual = 1 if ctx.norm == "inf" else 2  # the dual norm of the threat model's
            norms = a.flatten(1).norm(p=dual, dim=1)
            rec["gradient_norm"] = float(norms.mean())
            rec["first_order_change_at_headline"] = float(norms.mean() * ctx.headline)
        if r.delta is not None:
            delta = r.delta.detach().double()
            change = (a.flatten(1).sum(1) - delta).abs()  # f(x) - f(baseline)
            rec["completeness_error"] = float(delta.abs().max())
            rec["relative_completeness_error"] = float(
                (delta.abs() / change.clamp_min(1e-12)).max()
            )
        out_methods.append(rec)
    classes = r.classes if r.classes is not None else y
    agree = {}
    names = list(maps)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            agree[f"{names[i]} ~ {names[j]}"] = _agreement(maps[names[i]], maps[names[j]])
    rows = [[{"img": figures.to_image(x[i], d.lower, d.upper),
              "title": f"#{i} label {int(y[i])}\npred {int(classes[i])}",
              "color": "black" if int(classes[i]) == int(y[i]) else "#d62728"}
             for i in range(m)]]  # fmt: skip
    for method in methods:
        row = []
        for i in range(m):
            a = maps[method][i]
            a = a.sum(0) if a.dim() == 3 else a.reshape(1, -1) if a.dim() == 1 else a
            top = float(a.abs().max()) or 1.0
            signed = getattr(REGISTRY.get(method), "signed", False)
            row.append({"img": a.numpy(), "cmap": "RdBu_r" if signed else "inferno",
                        "vmin": -top if signed else 0, "vmax": top})  # fmt: skip
        rows.append(row)
    out = {
        "examples": list(range(m)),
        "classes": [int(c) for c in classes],
        "methods": out_methods,
        "agreement": agree,
        "png": figures.panel_grid(rows, ["input", *methods]),
    }
    if len(methods) < len(p.explain_methods):
        out.update(
            partial=True, note=f"time budget: {len(methods)} of {len(p.explain_methods)} methods"
        )
    return out

"""Audit stage: certified accuracy from sound bounds (IBP, CROWN-IBP, CROWN, alpha-CROWN as the
model size allows), within the stage's time budget.

Only points that may be certifiable are bounded: correctly classified, not broken by an attack at
that eps (an adversarial example that a forward pass confirms refutes any sound bound), and, at
each larger eps, certified by the method at the previous one. Skipping a point can only lower the
count, so every certified point is proven; the curve is a lower bound on true robust accuracy."""

from __future__ import annotations

import time

import torch

from robustlab.audit.budget import Deadline
from robustlab.audit.common import proportion_ci, rate
from robustlab.audit.profiles import ALPHA_MAX_PARAMS, CROWN_MAX_INPUTS, CROWN_MAX_PARAMS
from robustlab.audit.runner import Context, Progress
from robustlab.bounds import certify
from robustlab.data import Dataset
from robustlab.shards import run_shards, shard_bounds
from robustlab.threat import LpBall

CROSS_CHECK = 8  # broken points bounded at the headline eps: none may be certified


def allowed_methods(ctx: Context) -> tuple[list[str], list[str]]:
    """The profile's methods that the model's size allows, and notes on those left out."""
    params = sum(p.numel() for p in ctx.model.module.parameters())
    inputs = ctx.data.x[0].numel()
    methods, notes = [], []
    for m in ctx.profile.methods:
        if m != "ibp" and (params > CROWN_MAX_PARAMS or inputs > CROWN_MAX_INPUTS):
            notes.append(f"{m} left out: {params} parameters, {inputs} inputs (too large)")
        elif m == "alpha-crown" and params > ALPHA_MAX_PARAMS:
            notes.append(f"alpha-crown left out: {params} parameters (> {ALPHA_MAX_PARAMS})")
        else:
            methods.append(m)
    return methods, notes


def _bound(ctx, idx, e, method, deadline, say, first) -> tuple[torch.Tensor, int, float]:
    """Certify the points ``idx`` in chunks (the first of ``first`` points) while the stage's
    time lasts; returns (certified flags of the points bounded, how many were bounded, seconds)."""
    threat = LpBall(ctx.norm, e, ctx.data.lower, ctx.data.upper)
    out, done, seconds = [], 0, 0.0
    while done < len(idx):
        if done == 0:
            size = first
        else:
            size = int(deadline.left() / max(seconds / done, 1e-6))
            size = min(size, 256)
        if size <= 0:
            break
        part = idx[done : done + size]
        t0 = time.perf_counter()
        flags = _certified(ctx, ctx.subset(part), threat, method)
        seconds += time.perf_counter() - t0
        out.append(torch.tensor(flags, dtype=torch.bool))
        done += len(part)
        say(f"{method} at eps {e:g}: {done}/{len(idx)} points bounded", False)
    flags = torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)
    return flags, done, seconds


def _certified(ctx: Context, data: Dataset, threat: LpBall, method: str) -> list[bool]:
    """``certify``'s flags of the points, in shards on the audit's backend (bounds are
    deterministic: the same flags for every backend and shard size)."""
    bounds = shard_bounds(len(data), ctx.backend.shard_size)
    if len(bounds) == 1 and ctx.backend.name == "local":
        return _certify_shard(ctx.model.module, (data, threat, method, ctx.batch_size))
    shards = [(Dataset(data.name, data.x[a:b], data.y[a:b], data.lower, data.upper), threat,
               method, ctx.batch_size) for a, b in bounds]  # fmt: skip
    return sum(run_shards(_certify_shard, shards, ctx.backend, shared=(ctx.model.module,)), [])


def _certify_shard(module, shard) -> list[bool]:
    """One shard's certified flags (a Dask task)."""
    data, threat, method, batch_size = shard
    return list(certify(module, data, threat, method, batch_size=batch_size).certified)


def certify_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """Per method and eps (cheapest method first, eps ascending) the certified points; the
    certified curve counts a point certified by any method."""
    methods, notes = allowed_methods(ctx)
    n, eps = ctx.n, ctx.eps
    correct = ctx.correct
    if correct is None:
        with torch.no_grad():
            correct = ctx.model.module(ctx.data.x).argmax(1) == ctx.data.y
    robust = ctx.robust or {}
    attacked = 0 if ctx.attacked is None else ctx.attacked
    cert = {m: {e: torch.zeros(n, dtype=torch.bool) for e in eps} for m in methods}
    records, complete = [], True
    for m in methods:
        before = None
        for e in eps:
            cand = correct.clone()
            if e in robust:  # broken by an attack: cannot be certified
                cand[:attacked] &= robust[e]
            if m == "alpha-crown":
                scope = ctx.profile.alpha_scope
                if scope == "none" or (scope == "headline" and e != ctx.headline):
                    continue
                if "crown" in cert:
                    cert[m][e] |= cert["crown"][e]
                    cand &= ~cert["crown"][e]  # alpha-CROWN runs on what CROWN left open
            if before is not None:
                cand &= before
            if e == 0 and m != "ibp" and "ibp" in cert:  # bounds at a point are exact
                cert[m][e] = cert["ibp"][e].clone()
                before = cert[m][e]
                continue
            idx = cand.nonzero().squeeze(1)
            first = len(idx) if m == "ibp" else min(len(idx), 4 if m == "alpha-crown" else 16)
            flags, done, secs = _bound(ctx, idx, e, m, deadline, say, first)
            cert[m][e][idx[:done]] |= flags
            before = cert[m][e]
            full = done == len(idx)
            complete &= full
            records.append({
                "method": m, "eps": e, "n_bounded": done, "n_candidates": len(idx),
                "certified_accuracy": rate(cert[m][e]), "seconds": round(secs, 3),
                "complete": full,
            })  # fmt: skip
    union = {e: torch.zeros(n, dtype=torch.bool) for e in eps}
    for m in methods:
        for e in eps:
            union[e] |= cert[m][e]
    ctx.certified = union
    curve = []
    for e in eps:
        curve.append({
            "eps": e,
            "certified_accuracy": rate(union[e]),
            "ci": proportion_ci(int(union[e].sum()), n),
            "per_method": {
                m: rate(cert[m][e]) for m in methods
                if any(r["method"] == m and r["eps"] == e for r in records)
                or (m != "ibp" and e == 0)
            },
        })  # fmt: skip
    out = {
        "methods": methods,
        "norm": ctx.norm,
        "n": n,
        "curve": curve,
        "per_method": records,
        "cross_check": _cross_check(ctx, methods, correct, robust, attacked, say),
        "seconds": round(sum(r["seconds"] for r in records), 3),
    }
    if not complete:
        notes.append("time budget: some points were not bounded (counted as not certified)")
        out["partial"] = True
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _cross_check(ctx, methods, correct, robust, attacked, say) -> dict | None:
    """Bound a few points that an attack broke at the headline eps: a sound method certifies
    none of them (a certified one is a soundness bug, reported as an error flag)."""
    e = ctx.headline
    if e not in robust or not methods:
        return None
    broken = (correct[:attacked] & ~robust[e]).nonzero().squeeze(1)[:CROSS_CHECK]
    if len(broken) == 0:
        return None
    threat = LpBall(ctx.norm, e, ctx.data.lower, ctx.data.upper)
    m = "crown" if "crown" in methods else methods[0]
    say(f"cross-check: {m} on {len(broken)} points broken at eps {e:g}", False)
    r = certify(ctx.model.module, ctx.subset(broken), threat, m, batch_size=ctx.batch_size)
    return {
        "method": m,
        "eps": e,
        "points": broken.tolist(),
        "certified_but_broken": int(sum(r.certified)),
    }

"""Audit stages: clean evaluation, and the attack suite with one robustness curve per attack
(Croce & Hein 2020's per-sample worst case over the suite, arXiv:2003.01690)."""

from __future__ import annotations

import torch

from robustlab.attacks import suite_attacks
from robustlab.attacks.ensemble import WHITE_BOX
from robustlab.attacks.flags import SQUARE_MARGIN
from robustlab.attacks.sharded import evaluate_sharded
from robustlab.audit.budget import BudgetExceeded, Deadline
from robustlab.audit.common import Chunks, proportion_ci, rate
from robustlab.audit.runner import Context, Progress
from robustlab.inputs import batched_logits


def clean_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """Clean accuracy with its confidence interval, per class, and the confusion matrix."""
    logits = batched_logits(ctx.model.module, ctx.data.x, ctx.batch_size)
    pred = logits.argmax(1)
    y = ctx.data.y
    correct = pred == y
    ctx.pred, ctx.correct, ctx.num_classes = pred, correct, int(logits.shape[1])
    k = int(logits.shape[1])
    per_class = []
    for c in range(k):
        mask = y == c
        if mask.any():
            per_class.append({"class": c, "n": int(mask.sum()), "accuracy": rate(correct[mask])})
    confusion = None
    if k <= 20:
        confusion = torch.zeros(k, k, dtype=torch.long)
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
        confusion = confusion.tolist()
    out = {
        "accuracy": rate(correct),
        "n": ctx.n,
        "n_correct": int(correct.sum()),
        "ci": proportion_ci(int(correct.sum()), ctx.n),
        "num_classes": k,
        "per_class": per_class,
        "confusion": confusion,
        "baseline_accuracy": None,
    }
    if ctx.baseline is not None:
        base = batched_logits(ctx.baseline.module, ctx.data.x, ctx.batch_size).argmax(1)
        out["baseline_accuracy"] = rate(base == y)
    return out


def _square_check(robust: dict[str, torch.Tensor], eps: list[float], n: int) -> dict | None:
    """The black-box attacks broke points that every white-box attack missed (masked gradients)."""
    white = [a for a in robust if a in WHITE_BOX]
    free = [a for a in robust if a not in WHITE_BOX]  # no gradients: square, transfer
    if not free or not white:
        return None
    worst = None
    for j, e in enumerate(eps):
        white_robust = torch.stack([robust[a][j] for a in white]).all(0)
        free_broken = ~torch.stack([robust[a][j] for a in free]).all(0)
        extra = int((white_robust & free_broken).sum())
        if extra / n > SQUARE_MARGIN and (worst is None or extra > worst[1]):
            worst = (e, extra)
    if worst is None:
        return None
    return {
        "name": "black_box_beats_white_box",
        "message": f"at eps {worst[0]:g} black-box attacks broke {worst[1]} points that every "
        "white-box attack missed: a sign of gradient masking; trust the white-box curves less",
        "value": worst[1] / n,
    }


def _attack_chunk(ctx, names, eps, a, b, robust, costs, flags, totals, skipped, say) -> float:
    """Every attack on examples ``a:b``; results into ``robust``, ``costs``, ``flags`` and
    ``skipped`` (per eps, the points IBP certified, counted robust without an attack). Returns
    the seconds spent on the reliability checks (run once, with the first chunk)."""
    checks, first = 0.0, []
    sub = ctx.subset(slice(a, b))
    for i, name in enumerate(names):
        r = evaluate_sharded(  # one local shard: evaluate itself
            ctx.model.module,
            sub,
            eps,
            ctx.norm,
            backend=ctx.backend,
            suite=ctx.profile.suite,
            attacks=[name],
            batch_size=ctx.batch_size,
            seed=ctx.seed,
            checks=a == 0 and i == 0,
            progress=lambda m: say(f"examples {a}-{b}: {m}"),
        )
        robust[name][:, a:b] = torch.tensor(r.robust, dtype=torch.bool)
        if i == 0:
            first = [c["certified_skipped"] for c in r.curve]
        if a == 0 and i == 0:
            checks = max(0.0, r.seconds - sum(rec["seconds"] for rec in r.per_attack))
        flags += r.flags
        totals["n_forward"] += r.n_forward
        totals["n_backward"] += r.n_backward
        for rec in r.per_attack:
            acc = costs.setdefault(
                (rec["attack"], rec["eps"]), {"attack": rec["attack"], "eps": rec["eps"]}
            )
            for f in ("n_attacked", "n_broken", "n_forward", "n_backward", "seconds"):
                acc[f] = acc.get(f, 0) + rec[f]
    for j, v in enumerate(first):  # counted once the whole chunk is done
        skipped[j] += v
    return checks


def attack_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """Each attack of the suite on every example at every eps (its own curve); a point is robust
    at eps when no attack broke it there (or IBP certified it: ``certified_skipped``, those
    points are not attacked). Examples go in chunks sized to the stage's budget."""
    p = ctx.profile
    k = ctx.num_classes or int(batched_logits(ctx.model.module, ctx.data.x[:2]).shape[1])
    names = [name for name, _ in suite_attacks(p.suite, k, seed=ctx.seed)]
    eps = ctx.eps
    robust = {a: torch.zeros(len(eps), ctx.n, dtype=torch.bool) for a in names}
    costs: dict[tuple[str, float], dict] = {}
    flags: list[dict] = []
    totals = {"n_forward": 0, "n_backward": 0}
    skipped = [0] * len(eps)
    chunks = Chunks(ctx.n, deadline, first=min(ctx.n, max(32, ctx.n // 3)))
    for a, b in chunks:
        try:
            chunks.overhead += _attack_chunk(
                ctx, names, eps, a, b, robust, costs, flags, totals, skipped, say
            )
        except BudgetExceeded:  # past the hard deadline: keep the chunks already done
            break
    done = chunks.done
    if done == 0:
        raise BudgetExceeded("no chunk of examples finished within the stage's time budget")
    robust = {a: r[:, :done] for a, r in robust.items()}
    ensemble = torch.stack(list(robust.values())).all(0)  # (eps, done)
    ctx.robust = {e: ensemble[j] for j, e in enumerate(eps)}
    ctx.attacked = done
    per_attack_curves = {}
    for a in names:
        others = [robust[o] for o in names if o != a]
        only = ~robust[a] & (torch.stack(others).all(0) if others else True)
        per_attack_curves[a] = [
            {"eps": e, "robust_accuracy": rate(robust[a][j]), "only_this_broke": int(only[j].sum())}
            for j, e in enumerate(eps)
        ]
    square = _square_check(robust, eps, max(done, 1))
    seen, unique = set(), []
    for f in flags + ([square] if square else []):
        if f["name"] not in seen:
            seen.add(f["name"])
            unique.append(f)
    out = {
        "suite": p.suite,
        "attacks": names,
        "norm": ctx.norm,
        "n": ctx.n,
        "n_evaluated": done,
        "curve": [
            {
                "eps": e,
                "robust_accuracy": rate(ensemble[j]),
                "ci": proportion_ci(int(ensemble[j].sum()), done),
                "certified_skipped": skipped[j],
            }
            for j, e in enumerate(eps)
        ],
        "per_attack_curves": per_attack_curves,
        "per_attack": sorted(costs.values(), key=lambda r: (r["eps"], names.index(r["attack"]))),
        "flags": unique,
        "seconds": round(chunks.seconds, 3),
        **totals,
    }
    if done < ctx.n:
        out.update(partial=True, note=f"time budget: attacked {done} of {ctx.n} examples")
    return out

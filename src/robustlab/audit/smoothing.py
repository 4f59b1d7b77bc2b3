"""Audit stage: randomized smoothing (Cohen et al. 2019, arXiv:1902.02918) when a noise level is
given: the smoothed classifier's accuracy, abstentions, and certified accuracy against L2 radius."""

from __future__ import annotations

from robustlab.audit.budget import Deadline
from robustlab.audit.common import Chunks
from robustlab.audit.runner import Context, Progress
from robustlab.smoothing import ABSTAIN, certified_curve, smooth

ALPHA = 0.001


def smoothing_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """PREDICT and CERTIFY the first examples in chunks while the budget lasts."""
    p = ctx.profile
    n = min(ctx.n, p.smoothing_examples)
    samples: list[dict] = []
    seconds = 0.0
    chunks = Chunks(n, deadline, first=min(n, 16), most=64)
    for a, b in chunks:
        r = smooth(ctx.model.module, ctx.subset(slice(a, b)), ctx.sigma, n0=p.smoothing_n0,
                   n=p.smoothing_n, alpha=ALPHA, seed=ctx.seed + a)  # fmt: skip
        samples += r.samples
        seconds += r.seconds
        say(
            f"{len(samples)}/{n} inputs, {p.smoothing_n0 + p.smoothing_n} noise samples each", False
        )
    total = max(len(samples), 1)
    out = {
        "sigma": ctx.sigma,
        "n0": p.smoothing_n0,
        "n": p.smoothing_n,
        "alpha": ALPHA,
        "examples": len(samples),
        "clean_accuracy": sum(s["prediction"] == s["label"] for s in samples) / total,
        "abstain_rate": sum(s["prediction"] == ABSTAIN for s in samples) / total,
        "curve": certified_curve(samples, sigma=ctx.sigma),
        "samples": samples,
        "seconds": round(seconds, 3),
    }
    if len(samples) < n:
        out.update(partial=True, note=f"time budget: {len(samples)} of {n} examples")
    return out

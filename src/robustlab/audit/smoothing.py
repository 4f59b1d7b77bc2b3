"""Audit stage: randomized smoothing (Cohen et al. 2019, arXiv:1902.02918) when a noise level is
given: the smoothed classifier's accuracy, abstentions, and certified accuracy against L2 radius."""

from __future__ import annotations

from robustlab.audit.budget import Deadline
from robustlab.audit.common import Chunks
from robustlab.audit.runner import Context, Progress
from robustlab.smoothing import ABSTAIN, SmoothingResult, certified_curve, smooth
from robustlab.smoothing.availability import availability

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
                   n=p.smoothing_n, alpha=ALPHA, seed=ctx.seed + a,
                   backend=ctx.backend)  # fmt: skip
        samples += r.samples
        seconds += r.seconds
        say(
            f"{len(samples)}/{n} inputs, {p.smoothing_n0 + p.smoothing_n} noise samples each", False
        )
    total = max(len(samples), 1)
    out = {
        "sigma": ctx.sigma,
        "n0": p.smoothing_n0,
        "samples": p.smoothing_n,  # Monte-Carlo draws per input
        "alpha": ALPHA,
        "n": len(samples),  # examples
        "clean_accuracy": sum(s["prediction"] == s["label"] for s in samples) / total,
        "abstain_rate": sum(s["prediction"] == ABSTAIN for s in samples) / total,
        "curve": certified_curve(samples, sigma=ctx.sigma),
        "per_input": samples,
        "seconds": round(seconds, 3),
    }
    if len(samples) < n:
        out.update(partial=True, note=f"time budget: {len(samples)} of {n} examples")
    elif samples and deadline.fits(3 * seconds):  # the availability attack at the headline eps
        clean = SmoothingResult(ctx.sigma, p.smoothing_n0, p.smoothing_n, ALPHA,
                                out["clean_accuracy"], out["abstain_rate"], out["curve"], samples,
                                seconds, 0)  # fmt: skip
        say("availability attack on the smoothed classifier", False)
        av = availability(ctx.model.module, ctx.subset(slice(0, len(samples))), ctx.sigma,
                          ctx.headline, ctx.norm, clean=clean, seed=ctx.seed)  # fmt: skip
        out["availability"] = av.to_dict()
    return out

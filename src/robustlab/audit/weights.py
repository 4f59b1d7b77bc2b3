"""Audit stage, when asked for: network sensitivity (robustlab.sensitivity): per-layer Hessian
traces by Hutchinson's estimator (HAWQ-V2, Dong et al. 2020), top eigenvalues, the empirical
Fisher, accuracy under relative weight noise and under emulated precision, on the audit's data at
its headline eps (Linf)."""

from __future__ import annotations

from robustlab.audit.budget import Deadline
from robustlab.audit.runner import Context, Progress
from robustlab.sensitivity import analyze

# the quick profile's sizes, then the others'
SIZES = {
    "quick": {"samples": 16, "iterations": 20, "draws": 1, "robust_n": 50, "certify_n": 50},
    "other": {"samples": 64, "iterations": 50, "draws": 3, "robust_n": 100, "certify_n": 100},
}


def weights_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """The sensitivity report's numbers (``SensitivityResult.to_dict``) as the audit's section;
    stopped at the stage's hard deadline like every stage."""
    sizes = SIZES["quick" if ctx.profile.name == "quick" else "other"]
    eps = ctx.headline if ctx.norm == "inf" and ctx.headline > 0 else None
    r = analyze(ctx.model.module, ctx.data, eps=eps, batch_size=ctx.batch_size, seed=ctx.seed,
                progress=say, **sizes)  # fmt: skip
    return {**r.to_dict(), "eps": eps, "data": {"n": ctx.n}}

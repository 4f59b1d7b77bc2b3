"""The certified section's proof features (ProFIt, Banerjee and Singh 2024, arXiv:2301.13225):
for the first points certified at the headline eps, the neurons of the last ReLU layer whose
terms carry the certificate, with their input-gradient pictures (robustlab.explain)."""

from __future__ import annotations

from robustlab.audit.budget import Deadline
from robustlab.audit.certified import allowed_methods
from robustlab.audit.runner import Context, Progress, Stage
from robustlab.errors import RobustlabError
from robustlab.explain.proof_features import proof_features

POINTS = 3  # certified points explained


def proof_section(ctx: Context, deadline: Deadline, say: Progress, *, limit: int = POINTS):
    """Proof features of the first ``limit`` points certified at the headline eps (Linf, with
    CROWN on the layer), while the stage's time lasts; None when nothing is certified there. A
    model the method does not cover (a nonlinear head, no ReLU) gives a note instead."""
    e = ctx.headline
    cert = (ctx.certified or {}).get(e)
    if ctx.norm != "inf" or e <= 0 or cert is None or not bool(cert.any()):
        return None
    out: dict = {"eps": e, "points": []}
    if "crown" not in allowed_methods(ctx)[0]:  # the profile or the model's size rules it out
        out["note"] = "proof features need CROWN bounds, left out for this model or profile"
        return out
    d = ctx.data
    for i in cert.nonzero().squeeze(1)[:limit].tolist():
        if out["points"] and not deadline.fits(0):
            out["note"] = "time budget: fewer points explained"
            break
        say(f"proof features of point {i}", False)
        try:
            r = proof_features(ctx.model.module, d.x[i], int(d.y[i]), e,
                               lower=d.lower, upper=d.upper)  # fmt: skip
        except RobustlabError as err:
            out["note"] = str(err)
            break
        if r.certified:  # the audit may have certified it by another method or layer
            out["points"].append({"index": i, **r.to_dict()})
    return out


def with_proof_features(stage: Stage, *, limit: int = POINTS) -> Stage:
    """``stage`` (the certified stage) with its section's ``proof_features`` added."""

    def run(ctx: Context, deadline: Deadline, say: Progress) -> dict:
        out = stage(ctx, deadline, say)
        out["proof_features"] = proof_section(ctx, deadline, say, limit=limit)
        return out

    return run

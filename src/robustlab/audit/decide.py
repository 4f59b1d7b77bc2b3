"""Optional audit stages for deployments that decide or abstain: conformal prediction sets
(split, RSCP+, VRCP; Yan et al. 2024, Jeary et al. 2024), BEYOND detection with its adaptive
attack (He et al. 2024), mixing with a second, accurate model (MixedNUTS, Bai et al. 2024) and
certify-or-abstain under the availability attack (Lorenz et al. 2023), each at the audit's
headline eps, when asked for. Each one hears the stage's deadline: its engine reports progress
through ``say`` (stopped past the hard deadline) and sizes its work to the soft one."""

from __future__ import annotations

from robustlab.abstain import AbstainResult, certify_or_abstain
from robustlab.audit.budget import BudgetExceeded, Deadline
from robustlab.audit.common import Chunks
from robustlab.audit.runner import Context, Progress
from robustlab.conformal import conformal
from robustlab.data import Dataset, load_digits_split
from robustlab.detect import detection
from robustlab.mix import STRENGTHS, mix
from robustlab.model import LoadedModel
from robustlab.results import metric_dicts

ENCODER_SHARE = 0.35  # of the detect stage's time for training the self-supervised encoder
QUICK_STRENGTHS = (1.0, 0.98, 0.95, 0.9, 0.8)


def _joined(note: str | None, more: str) -> str:
    """A result's own note (a verdict) kept, the stage's added after it."""
    return more if not note else f"{note}; {more}"


def conformal_stage(ctx: Context, deadline: Deadline, say: Progress, *, alpha: float) -> dict:
    """Coverage and set size of the three kinds of sets, clean and under attack."""

    quick = ctx.profile.name == "quick"
    r = conformal(ctx.model.module, ctx.data, alpha, ctx.headline, ctx.norm,
                  n_samples=256 if quick else 512, steps=20 if quick else 40, seed=ctx.seed,
                  progress=say)  # fmt: skip
    return {**r.to_dict(), "metrics": r.metric_dicts()}


def _encoder_data(data: Dataset) -> tuple[Dataset, Dataset]:
    """Digits' training split for the digits test split, else the first half of the data."""

    if data.name == "digits":
        return load_digits_split(train=True).matched_to(tuple(data.x.shape[1:])), data
    h = len(data) // 2
    part = [Dataset(data.name, data.x[a:b], data.y[a:b], data.lower, data.upper)
            for a, b in ((0, h), (h, len(data)))]  # fmt: skip
    return part[0], part[1]


def detect_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """BEYOND against the suite's attacks and the adaptive attack; the encoder trains for at
    most a share of the stage's time."""

    quick = ctx.profile.name == "quick"
    enc, data = _encoder_data(ctx.data)
    epochs = 10 if quick else 40
    r = detection(ctx.model.module, data, enc, ctx.headline, ctx.norm,
                  attacks=("fgsm", "pgd", "apgd-ce", "apgd-t"), encoder_epochs=epochs,
                  encoder_seconds=ENCODER_SHARE * deadline.seconds,
                  adaptive_steps=15 if quick else 50, seed=ctx.seed, progress=say)  # fmt: skip
    out = {**r.to_dict(), "metrics": r.metric_dicts()}
    if r.encoder["epochs"] < epochs:
        out["note"] = _joined(out.get("note"), f"time budget: the encoder trained "
                              f"{r.encoder['epochs']} of {epochs} epochs")  # fmt: skip
    return out


def mix_stage(ctx: Context, deadline: Deadline, say: Progress, *, accurate: LoadedModel) -> dict:
    """MixedNUTS mixtures of ``accurate`` with the audited model as the robust member, their
    clean / robust frontier under the end-to-end attack; strengths left out when time runs
    short."""

    quick = ctx.profile.name == "quick"
    r = mix(accurate.module, ctx.model.module, ctx.data, ctx.headline, ctx.norm,
            strengths=QUICK_STRENGTHS if quick else STRENGTHS, suite=ctx.profile.suite,
            seed=ctx.seed, batch_size=ctx.batch_size, progress=say,
            fits_in=deadline.fits)  # fmt: skip
    out = {**r.to_dict(), "accurate": accurate.name,
           "metrics": metric_dicts(r.metrics(), keep_missing=True)}  # fmt: skip
    if r.skipped:
        left = ", ".join(f"{q:.3g}" for q in r.skipped)
        out.update(partial=True, note=_joined(out.get("note"), f"time budget: strengths {left} "
                                              "left out"))  # fmt: skip
    return out


def abstain_stage(ctx: Context, deadline: Deadline, say: Progress, *, radius: float) -> dict:
    """Certify-or-abstain at ``radius`` (CROWN), clean and under the availability attack at the
    headline eps, on the first examples in chunks while the budget lasts."""

    parts: list[AbstainResult] = []
    chunks = Chunks(ctx.n, deadline, first=min(ctx.n, 16), most=64)
    for a, b in chunks:
        parts.append(certify_or_abstain(ctx.model.module, ctx.subset(slice(a, b)), radius,
                                        ctx.headline, ctx.norm, batch_size=ctx.batch_size,
                                        seed=ctx.seed + a))  # fmt: skip
        try:  # past the hard deadline: keep the chunks already done
            say(f"{b}/{ctx.n} inputs certified or abstained, clean and attacked")
        except BudgetExceeded:
            break
    r = AbstainResult.merged(parts)
    out = {**r.to_dict(), "metrics": r.metric_dicts()}
    if r.examples < ctx.n:
        out.update(partial=True, note=f"time budget: {r.examples} of {ctx.n} examples")
    return out

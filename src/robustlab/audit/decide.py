"""Optional audit stages for deployments that decide or abstain: conformal prediction sets
(split, RSCP+, VRCP; Yan et al. 2024, Jeary et al. 2024) and BEYOND detection with its adaptive
attack (He et al. 2024), each at the audit's headline eps, when asked for."""

from __future__ import annotations

from robustlab.audit.budget import Deadline
from robustlab.audit.runner import Context, Progress
from robustlab.conformal import conformal
from robustlab.data import Dataset, load_digits_split
from robustlab.detect import detection


def conformal_stage(ctx: Context, deadline: Deadline, say: Progress, *, alpha: float) -> dict:
    """Coverage and set size of the three kinds of sets, clean and under attack."""

    quick = ctx.profile.name == "quick"
    r = conformal(ctx.model.module, ctx.data, alpha, ctx.headline, ctx.norm,
                  n_samples=256 if quick else 512, steps=20 if quick else 40, seed=ctx.seed,
                  progress=lambda m: say(m, False))  # fmt: skip
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
    """BEYOND against the suite's attacks and the adaptive attack."""

    quick = ctx.profile.name == "quick"
    enc, data = _encoder_data(ctx.data)
    r = detection(ctx.model.module, data, enc, ctx.headline, ctx.norm,
                  attacks=("fgsm", "pgd", "apgd-ce", "apgd-t"), encoder_epochs=10 if quick else 40,
                  adaptive_steps=15 if quick else 50, seed=ctx.seed,
                  progress=lambda m: say(m, False))  # fmt: skip
    return {**r.to_dict(), "metrics": r.metric_dicts()}

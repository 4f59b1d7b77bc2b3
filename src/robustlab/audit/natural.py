"""Audit stage: natural robustness (Hendrycks & Dietterich 2019, arXiv:1903.12261): corruptions
at each severity, small transformations and octave-band noise, with corrupted examples."""

from __future__ import annotations

import torch

from robustlab.audit import figures
from robustlab.audit.budget import BudgetExceeded, Deadline
from robustlab.audit.runner import Context, Progress
from robustlab.corruptions import (
    corrupt,
    corruption_names,
    evaluate_corruptions,
    evaluate_frequency,
    evaluate_transformations,
    parse_severities,
)
from robustlab.corruptions.base import stable_seed
from robustlab.corruptions.evaluate import from_unit, to_unit_x
from robustlab.corruptions.tabular import tabular_names
from robustlab.inputs import batched_logits

EXAMPLE_ROWS = 3  # images shown under the most harmful corruptions
EXAMPLE_CORRUPTIONS = 7


def images_ok(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] in (1, 3)


def natural_reason(ctx: Context) -> str | None:
    """Why the stage cannot run on this data (None when it can)."""
    x = ctx.data.x
    if x.dim() == 2 or images_ok(x):
        return None
    return (
        f"corruptions need images (N, C, H, W) with C 1 or 3 or rows (N, F); found {tuple(x.shape)}"
    )


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values and all(v is not None for v in values) else None


def natural_stage(ctx: Context, deadline: Deadline, say: Progress) -> dict:
    """Corruptions one at a time while the budget lasts (the summary metrics over those done),
    then transformations and octave-band noise (images)."""
    p, data = ctx.profile, ctx.data
    tabular = data.x.dim() == 2
    names = tabular_names("all") if tabular else corruption_names(p.corruptions)
    sevs = parse_severities(p.severities)
    base = None if ctx.baseline is None else ctx.baseline.module
    table, per, base_rows, seconds, base_clean, clean = [], [], [], 0.0, None, None
    group = ctx.backend.workers if ctx.backend.name == "dask" else 1  # one Dask task per name
    for k in range(0, len(names), group):
        if k and not deadline.fits(seconds / (k // group)):
            break
        try:
            r = evaluate_corruptions(ctx.model.module, data, names[k : k + group], sevs,
                                     baseline=base, batch_size=ctx.batch_size, seed=ctx.seed,
                                     progress=say, backend=ctx.backend)  # fmt: skip
        except BudgetExceeded:
            break
        seconds += r.seconds
        table += r.table
        per += r.per_corruption
        clean = r.clean_accuracy
        if r.baseline:
            base_clean = r.baseline["clean_accuracy"]
            base_rows += r.baseline["table"]
    done = [q["corruption"] for q in per]
    summary = [q for q in per if q["common"]] or per
    out = {
        "clean_accuracy": clean,
        "table": table,
        "per_corruption": per,
        "mean_corruption_accuracy": _mean([q["accuracy"] for q in summary]),
        "mean_corruption_error": None,
        "mce": _mean([q["ce"] for q in summary]) if base is not None else None,
        "relative_mce": _mean([q["relative_ce"] for q in summary]) if base is not None else None,
        "baseline": None,
        "settings": {
            "corruptions": done,
            "severities": sevs,
            "seed": ctx.seed,
            "max_shift": None if tabular else p.max_shift,
        },  # fmt: skip
        "transformations": None,
        "frequency_channel": None,
        "frequency": None,
        "examples": None,
        "seconds": round(seconds, 3),
    }
    if out["mean_corruption_accuracy"] is not None:
        out["mean_corruption_error"] = 1 - out["mean_corruption_accuracy"]
    if base is not None:
        out["baseline"] = {"model": ctx.baseline.to_dict(), "clean_accuracy": base_clean,
                           "table": base_rows}  # fmt: skip
    if len(done) < len(names):
        out.update(partial=True, note=f"time budget: {len(done)} of {len(names)} corruptions")
    if tabular:
        return out
    if p.max_shift and deadline.left() > 0:
        say(f"translations up to {p.max_shift} px, rotations, scales", False)
        out["transformations"] = evaluate_transformations(
            ctx.model.module, data, max_shift=p.max_shift, batch_size=ctx.batch_size
        ).to_dict()
    if p.frequency and deadline.left() > 0:
        say("octave-band noise", False)
        freq = evaluate_frequency(ctx.model.module, data, batch_size=ctx.batch_size,
                                  seed=ctx.seed).to_dict()  # fmt: skip
        out["frequency_channel"], out["frequency"] = freq["channel"], freq
    say("corrupted examples", False)
    out["corrupted_examples"] = corrupted_examples(ctx, per, sevs)
    return out


def corrupted_examples(ctx: Context, per: list[dict], sevs: list[int]) -> dict | None:
    """A few correctly classified images under the most harmful corruptions (middle severity),
    each with the model's prediction (red when wrong)."""
    if not per:
        return None
    worst = sorted(per, key=lambda q: q["accuracy"])[:EXAMPLE_CORRUPTIONS]
    names = [q["corruption"] for q in worst]
    s = sevs[len(sevs) // 2]
    correct = ctx.correct
    pick = correct.nonzero().squeeze(1) if correct is not None else torch.arange(ctx.n)
    pick = pick[:EXAMPLE_ROWS]
    d = ctx.data
    x0, y0 = d.x[pick], d.y[pick]
    views = [x0] + [
        from_unit(corrupt(to_unit_x(x0, d), nm, s, stable_seed(ctx.seed, "audit", nm, s)), d)
        for nm in names
    ]
    preds = [batched_logits(ctx.model.module, v).argmax(1) for v in views]
    rows, items = [], []
    for i in range(len(pick)):
        row = []
        for j, v in enumerate(views):
            ok = bool(preds[j][i] == y0[i])
            what = "clean" if j == 0 else names[j - 1].replace("_", " ")
            row.append({"img": figures.to_image(v[i], d.lower, d.upper),
                        "title": f"{what}\npred {int(preds[j][i])}",
                        "color": "black" if ok else "#d62728"})  # fmt: skip
        rows.append(row)
        items.append({
            "index": int(pick[i]), "label": int(y0[i]),
            "predictions": {("clean" if j == 0 else names[j - 1]): int(preds[j][i])
                            for j in range(len(views))},
        })  # fmt: skip
    labels = [f"#{int(i)}\nlabel {int(y)}" for i, y in zip(pick, y0, strict=True)]
    return {"severity": s, "corruptions": names, "items": items,
            "png": figures.panel_grid(rows, labels)}  # fmt: skip

"""The audit's summary: the combined curve, the headline numbers and verdict, per-class robust
accuracy and the reliability flags; computed from the stages' results after they ran."""

from __future__ import annotations

import torch

from robustlab.audit.common import proportion_ci, rate
from robustlab.audit.runner import Context
from robustlab.results import Metric, curve_metrics, metric_dicts

GAP_FLAG = 0.1  # unresolved points (neither broken nor proven) worth a note
IG_FLAG = 0.05  # Integrated Gradients' relative completeness error worth a note
SMALL_N = 200
CONSTANT_SHARE = 0.95  # one class taking this share of the predictions: a constant model
SHIFT_FRAGILE = 0.05  # worst-of-k accuracy under translations below this share of clean accuracy


def _common(ctx: Context) -> int:
    """Examples that every per-example result covers (the attack stage may stop early)."""
    return ctx.n if ctx.robust is None or ctx.attacked is None else int(ctx.attacked)


def combined_curve(ctx: Context) -> list[dict]:
    """Per eps: empirical and certified accuracy on the same examples (the attacked ones)."""
    m = _common(ctx)
    robust, cert = ctx.robust or {}, ctx.certified or {}
    out = []
    for e in ctx.eps:
        out.append({
            "eps": e,
            "robust_accuracy": rate(robust[e][:m]) if e in robust and m else None,
            "certified_accuracy": rate(cert[e][:m]) if e in cert and m else None,
        })  # fmt: skip
    return out


def _verdict(clean, emp, cert, k) -> tuple[str, str]:
    """A level (good / warn / bad / unknown) and a sentence, from accuracies at one eps."""
    if clean is None:
        return "unknown", "the clean evaluation did not finish"
    if k and clean < 1.5 / k:
        return "bad", "clean accuracy is close to chance"
    if clean == 0:
        return "bad", "no example is classified correctly"
    # every percentage on the cards' base: the examples (not the correct predictions)
    proven = "" if cert is None else f"; bounds prove {100 * cert:.1f}% of the examples"
    if cert is not None and cert >= 0.9 * clean:
        return (
            "good",
            f"certified robust: bounds prove {100 * cert:.1f}% of the examples robust "
            f"({100 * clean:.1f}% are classified correctly)",
        )
    if emp is None:
        return "unknown", "no attack results" + proven
    broken = (
        f"attacks break {100 * (clean - emp):.1f}% of the examples ({100 * clean:.1f}% clean, "
        f"{100 * emp:.1f}% robust){proven}"
    )
    if emp >= 0.9 * clean:
        return "warn", f"empirically robust, not proven: {broken}"
    if emp >= 0.5 * clean:
        return "warn", f"partly robust: {broken}"
    return "bad", f"not robust: {broken}"


def headline(ctx: Context, curve: list[dict]) -> dict:
    """Clean, empirical and certified accuracy at the headline eps, with 95% intervals."""
    m = _common(ctx)
    correct = ctx.correct
    point = next((p for p in curve if p["eps"] == ctx.headline), {})
    clean = rate(correct[:m]) if correct is not None and m else None
    emp, cert = point.get("robust_accuracy"), point.get("certified_accuracy")
    gap = emp - cert if emp is not None and cert is not None else None
    level, text = _verdict(clean, emp, cert, ctx.num_classes)

    def ci(v):
        return None if v is None else proportion_ci(round(v * m), m)

    return {
        "eps": ctx.headline,
        "norm": ctx.norm,
        "n": m,
        "clean_accuracy": clean,
        "robust_accuracy": emp,
        "certified_accuracy": cert,
        "gap": gap,
        "ci": {"clean": ci(clean), "robust": ci(emp), "certified": ci(cert)},
        "verdict": level,
        "verdict_text": text,
    }


def per_class(ctx: Context) -> list[dict]:
    """Clean, empirical and certified accuracy per class at the headline eps."""
    m = _common(ctx)
    correct = ctx.correct
    if correct is None or not m:
        return []
    y = ctx.data.y[:m]
    robust = (ctx.robust or {}).get(ctx.headline)
    cert = (ctx.certified or {}).get(ctx.headline)
    rows = []
    for c in torch.unique(y).tolist():
        mask = y == c
        rows.append({
            "class": int(c),
            "n": int(mask.sum()),
            "clean_accuracy": rate(correct[:m][mask]),
            "robust_accuracy": None if robust is None else rate(robust[:m][mask]),
            "certified_accuracy": None if cert is None else rate(cert[:m][mask]),
        })  # fmt: skip
    return rows


def per_example(ctx: Context) -> dict:
    """Per example at the headline eps, as strings of 0 / 1 (example i at position i): correct,
    robust (no attack broke it) and certified; over the examples the summary covers."""
    m = _common(ctx)
    out = {"n": m}
    arrays = {
        "correct": ctx.correct,
        "robust": (ctx.robust or {}).get(ctx.headline),
        "certified": (ctx.certified or {}).get(ctx.headline),
    }
    for key, v in arrays.items():
        out[key] = None if v is None else "".join("1" if b else "0" for b in v[:m].tolist())
    return out


def flags(ctx: Context, report: dict) -> list[dict]:
    """Reasons to read the numbers with care: the attack suite's reliability flags, stages that
    failed or stopped early, a soundness cross-check, unresolved points, small samples."""
    out = []

    def add(name, level, message, stage=None, value=None):
        out.append({"name": name, "level": level, "message": message, "stage": stage,
                    "value": value})  # fmt: skip

    for s in report.get("stages", []):
        if s["status"] in ("failed", "timeout", "interrupted"):
            add(f"stage_{s['status']}", "warning", f"stage '{s['name']}' {s['status']}: "
                f"{s.get('error') or ''}".strip(), s["name"])  # fmt: skip
        elif s["status"] == "partial" or (
            s["status"] == "skipped" and "budget" in (s.get("note") or "")
        ):
            add("stage_partial", "warning", f"stage '{s['name']}': {s.get('note')}", s["name"])
    for f in (report.get("attacks") or {}).get("flags", []):
        add(f["name"], "warning", f["message"], "attacks", f.get("value"))
    cross = (report.get("certified") or {}).get("cross_check")
    if cross and cross["certified_but_broken"]:
        add("soundness", "error", f"{cross['certified_but_broken']} points broken by an attack were "
            f"certified by {cross['method']} at eps {cross['eps']:g}: a bug; do not trust the "
            "certified numbers", "certified", cross["certified_but_broken"])  # fmt: skip
    h = report.get("headline") or {}
    if h.get("gap") is not None and h["gap"] > GAP_FLAG:
        add("unresolved", "info", f"{100 * h['gap']:.1f}% of the examples are neither broken by "
            f"an attack nor proven robust at eps {h['eps']:g}: stronger bounds (alpha-CROWN, "
            "--profile standard or full) or stronger attacks would narrow the range", "summary",
            h["gap"])  # fmt: skip
    if h.get("n") is not None and h["n"] < SMALL_N:
        add("small_sample", "info", f"accuracies come from {h['n']} examples: see the 95% "
            "intervals; use more examples before comparing close numbers", "summary", h["n"])  # fmt: skip
    if ctx.profile.name == "quick":
        add("quick_profile", "info", "quick profile: a fast attack suite, CROWN at most and few "
            "examples; run --profile standard or full before relying on the numbers", "summary")  # fmt: skip
    _model_flags(ctx, report, add)
    sm = report.get("smoothing")
    if sm and sm["abstain_rate"] > 0.5:
        add("abstentions", "warning", f"the smoothed classifier abstains on {100 * sm['abstain_rate']:.0f}% "
            "of the inputs: sigma may be too large for this model", "smoothing", sm["abstain_rate"])  # fmt: skip
    for rec in (report.get("sensitivity") or {}).get("methods", []):
        rel = rec.get("relative_completeness_error")
        if rel is not None and rel > IG_FLAG:
            add("ig_steps", "info", f"Integrated Gradients' completeness error reaches "
                f"{100 * rel:.0f}% of the output change: more steps would sharpen the maps",
                "sensitivity", rel)  # fmt: skip
    return out


def _model_flags(ctx: Context, report: dict, add) -> None:
    """A model that predicts one class; a model that no one-pixel shift leaves correct."""
    pred = ctx.pred
    if pred is not None and len(pred) and len(torch.unique(ctx.data.y)) > 1:
        counts = torch.bincount(pred)
        top = int(counts.argmax())
        share = float(counts[top]) / len(pred)
        label_share = float((ctx.data.y == top).float().mean())
        if share >= CONSTANT_SHARE and label_share < CONSTANT_SHARE:
            add("constant_prediction", "warning", f"the model predicts class {top} for "
                f"{100 * share:.0f}% of the inputs ({100 * label_share:.0f}% of the labels): "
                "robustness numbers of a constant model say little", "clean", share)  # fmt: skip
    nat = report.get("corruptions") or {}
    clean = (report.get("clean") or {}).get("accuracy")
    for fam in (nat.get("transformations") or {}).get("families", []):
        worst = fam.get("worst_case_accuracy")
        if fam.get("family") == "translation" and clean and worst is not None:
            if worst <= SHIFT_FRAGILE * clean:
                add("shift_fragile", "warning", f"{100 * worst:.1f}% of the examples stay correct "
                    f"under every small translation (worst-of-k; {100 * clean:.1f}% clean): the "
                    "model depends on exact pixel positions", "corruptions", worst)  # fmt: skip


def summarise(ctx: Context, report: dict) -> dict:
    """Add the combined curve, headline, per-class table and flags to ``report``."""
    clean = report.get("clean") or {}
    report["clean_accuracy"] = clean.get("accuracy")
    report["curve"] = combined_curve(ctx)
    report["headline"] = headline(ctx, report["curve"])
    report["per_class"] = per_class(ctx)
    report["per_example"] = per_example(ctx)
    nat = report.get("corruptions") or {}
    for key in ("mean_corruption_accuracy", "mce", "relative_mce"):
        report[key] = nat.get(key)
    report["flags"] = flags(ctx, report)
    report["metrics"] = metric_dicts(audit_metrics(report), keep_missing=True)
    return report


def audit_metrics(report: dict) -> list[Metric]:
    """Clean accuracy, empirical and certified accuracy at each eps, the corruption summary and
    the gap (empirical - certified) at the headline eps."""
    out = [Metric("clean_accuracy", report.get("clean_accuracy"), True),
           *curve_metrics(report.get("curve") or [])]  # fmt: skip
    for key, higher in (
        ("mean_corruption_accuracy", True),
        ("mce", False),
        ("relative_mce", False),
    ):
        if report.get(key) is not None:
            out.append(Metric(key, report[key], higher))
    head = report.get("headline") or {}
    if head.get("gap") is not None:
        out.append(Metric(f"gap@{head['eps']:g}", head["gap"], False))
    return out

"""The audit page and the side-by-side page of several runs: jinja2 templates in
``robustlab/report/templates`` with every figure embedded (offline, one file, no scripts)."""

from __future__ import annotations

import json

import jinja2

from robustlab.audit import figures
from robustlab.report.plots import severity_curves
from robustlab.report.proof_plots import proof_pictures
from robustlab.report.sections import SECTIONS

LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ci(v) -> str:
    return "" if not v else f"{100 * v[0]:.0f}-{100 * v[1]:.0f}%"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("robustlab", "report/templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    env.globals.update(pct=_pct, ci=_ci)
    return env


def audit_figures(report: dict) -> dict:
    """The figures drawn from a report's numbers (the example grids are stored in the report)."""
    nat = report.get("corruptions") or {}
    families = {p["corruption"]: p["family"] for p in nat.get("per_corruption") or []}
    sm = report.get("smoothing") or {}
    return {
        "curves": figures.curves(report),
        "heatmap": figures.corruption_heatmap(nat.get("table") or [], nat.get("clean_accuracy")),
        "severity": severity_curves(nat["table"], nat["clean_accuracy"], families)
        if nat.get("table")
        else None,
        "per_class": figures.per_class(report.get("per_class") or []),
        "radius": figures.radius_curve(sm.get("curve") or [], sm.get("clean_accuracy")),
        "proofs": proof_pictures(report.get("certified") or {}),
        "weights": SECTIONS["sensitivity"].render_figures(report["weights"])
        if report.get("weights")
        else {},
    }


def _sorted_flags(report: dict) -> list[dict]:
    return sorted(report.get("flags") or [], key=lambda f: LEVEL_ORDER.get(f.get("level"), 3))


def render_audit(report: dict) -> str:
    """The HTML page of an audit report."""
    return (
        _env()
        .get_template("audit.html.j2")
        .render(
            a=report,
            fig=audit_figures(report),
            flags=_sorted_flags(report),
            settings=json.dumps(report.get("settings", {}), indent=2),
            versions=json.dumps(report.get("versions", {}), indent=2),
            model=json.dumps(report.get("model", {}), indent=2),
            profile=json.dumps(report.get("profile_table", {}), indent=2),
        )
    )


def _label(run, report: dict) -> str:
    model = (report.get("model") or {}).get("name") or run.model
    return f"run {run.id}: {model}"


def render_compare(runs: list, reports: list[dict | None], table: tuple[list, list]) -> str:
    """Several runs side by side: verdicts, one plot of every curve, per-class accuracy,
    corruption heat-maps, examples, flags and settings. ``runs`` are store records, ``reports``
    their report dicts (None when the file is gone), ``table`` the metrics of ``store.compare``."""
    entries = []
    for run, rep in zip(runs, reports, strict=True):
        rep = rep or {}
        entries.append({
            "run": run,
            "r": rep,
            "label": _label(run, rep),
            "fig": audit_figures(rep) if rep.get("kind") == "audit" else {},
            "flags": _sorted_flags(rep),
            "settings": json.dumps(rep.get("settings", run.settings), indent=2),
            "versions": json.dumps(rep.get("versions", {}), indent=2),
        })  # fmt: skip
    classes = sorted({c["class"] for e in entries for c in e["r"].get("per_class") or []})
    eps = sorted({p["eps"] for e in entries for p in e["r"].get("curve") or [] if "eps" in p})
    corruptions = list(dict.fromkeys(
        p["corruption"] for e in entries for p in (e["r"].get("corruptions") or {}).get("per_corruption") or []
    ))  # fmt: skip
    curves = figures.compare_curves([e["r"] for e in entries], [e["label"] for e in entries])
    return (
        _env()
        .get_template("audit_compare.html.j2")
        .render(
            entries=entries,
            classes=classes,
            eps=eps,
            corruptions=corruptions,
            curves=curves,
            header=table[0],
            rows=table[1],
        )
    )

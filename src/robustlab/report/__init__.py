"""Reports: ``report.json`` (the source of truth) and a self-contained ``report.html``."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from robustlab.report.audit import render_audit
from robustlab.report.plots import accuracy_curve
from robustlab.report.sections import SECTIONS
from robustlab.results import SCHEMA_VERSION


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


PAGES = {"audit": render_audit}  # kinds that render a page of their own (else: the generic page)


def render_html(report: dict) -> str:
    """The HTML page for a report dict: offline, every figure embedded."""
    page = PAGES.get(report.get("kind"))
    if page is not None:
        return page(report)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("robustlab", "report/templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    # a smoothing report's curve is over the certified L2 radius: shown on the eps axis
    curve = [
        p if "eps" in p else {"eps": p.get("radius", 0.0), **p} for p in report.get("curve") or []
    ]
    figure = (
        accuracy_curve(curve, report["clean_accuracy"], report.get("norm", "inf"))
        if curve
        else None
    )
    nonzero = [p for p in curve if p["eps"] > 0]
    headline = dict(nonzero[0]) if nonzero else None
    if headline:
        headline.setdefault("robust_accuracy", None)
        headline.setdefault("certified_accuracy", None)
    curve = [{"robust_accuracy": None, "certified_accuracy": None, **p} for p in curve]
    section = SECTIONS.get(report.get("kind"))  # a kind that renders its own section
    return env.get_template("report.html.j2").render(
        section=section.template if section else None,
        figs=section.render_figures(report) if section else {},
        r={**report, "curve": curve},
        pct=_pct,
        figure=figure,
        headline=headline,
        settings=json.dumps(report.get("settings", {}), indent=2),
        model=json.dumps(report.get("model", {}), indent=2),
    )


def write_report(report: dict, json_path: Path | str, html_path: Path | str | None = None) -> dict:
    """Write the report as JSON (with its schema version) and, when asked, its HTML page."""
    report = {"schema_version": SCHEMA_VERSION, **report}
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    if html_path is not None:
        Path(html_path).write_text(render_html(report), encoding="utf-8")
    return report


def write_report_dir(report: dict, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``out_dir/report.json`` and ``out_dir/report.html``; return both paths."""
    out = Path(out_dir)
    write_report(report, out / "report.json", out / "report.html")
    return out / "report.json", out / "report.html"

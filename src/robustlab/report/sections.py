"""Report sections of the result kinds that render their own part of the page: the template the
page includes and the figures it shows, computed from the report dict (so a recorded report
renders again). One table; the page looks a kind up here and never branches on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from robustlab.report import blindspot_plots as bp
from robustlab.report import plots
from robustlab.report import proof_plots as pp
from robustlab.report import weight_plots as wp


@dataclass(frozen=True)
class Section:
    """A kind's template (under report/templates) and its figures by name."""

    template: str
    figures: dict[str, Callable[[dict], str | None]]

    def render_figures(self, report: dict) -> dict[str, str | None]:
        return {name: fn(report) for name, fn in self.figures.items()}


HEATMAPS = 16  # attribution maps shown in an explain report


def heatmaps(report: dict) -> str | None:
    """Heat-maps of the first attributions of an explain report (a signed method's diverge at 0:
    the result says ``signed``)."""
    attributions = report.get("attributions")
    if not attributions:
        return None
    classes = report.get("classes") or [None] * len(attributions)
    titles = [
        f"#{i}" + ("" if c is None else f" class {c}") for i, c in enumerate(classes[:HEATMAPS])
    ]
    return plots.attribution_maps(attributions[:HEATMAPS], titles, bool(report.get("signed")))


def severity(report: dict) -> str | None:
    """Accuracy against severity of a corrupt report, per corruption family."""
    if not report.get("table"):
        return None
    families = {p["corruption"]: p["family"] for p in report.get("per_corruption") or []}
    return plots.severity_curves(report["table"], report["clean_accuracy"], families)


SECTIONS: dict[str, Section] = {
    "explain": Section("explain.html.j2", {"heatmaps": heatmaps}),
    "corrupt": Section("corrupt.html.j2", {"severity": severity}),
    "sensitivity": Section(
        "sensitivity.html.j2",
        {"layers": wp.layer_bars, "noise": wp.noise_curves, "correlation": wp.trace_vs_drop},
    ),
    "prune": Section("prune.html.j2", {"curve": wp.sparsity_curve}),
    "patch": Section("patch.html.j2", {"curve": wp.patch_curve}),
    "mix": Section("mix.html.j2", {}),
    "conformal": Section("conformal.html.j2", {}),
    "smooth": Section("availability.html.j2", {}),
    "detect": Section("detect.html.j2", {}),
    "repair": Section("repair.html.j2", {}),
    "certify": Section("proofs.html.j2", {"proofs": pp.proof_pictures}),  # --explain-proofs
    "blindspots": Section(
        "blindspots.html.j2", {"paths": bp.levelset_paths, "cues": bp.cue_conflicts}
    ),
}

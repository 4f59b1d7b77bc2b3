"""``robustlab audit``: clean accuracy, attacks, certified bounds, corruptions, smoothing and a
sensitivity summary in one run within a time budget, as one report (JSON + offline HTML)."""

from robustlab.audit.job import audit_job, demo_job
from robustlab.audit.profiles import PROFILES, Profile, default_eps, get_profile, headline_eps
from robustlab.audit.render import render_audit, render_compare

__all__ = [
    "PROFILES",
    "Profile",
    "audit_job",
    "default_eps",
    "demo_job",
    "get_profile",
    "headline_eps",
    "render_audit",
    "render_compare",
]

"""The audit's stages (clean accuracy, attacks, certified bounds, corruptions, smoothing,
sensitivity, adversarial examples) and its profiles; ``robustlab.jobs.audit`` runs them within a
time budget and ``robustlab.report.audit`` renders the page."""

from robustlab.audit.profiles import PROFILES, Profile, default_eps, get_profile, headline_eps

__all__ = ["PROFILES", "Profile", "default_eps", "get_profile", "headline_eps"]

"""Errors that robustlab reports to a user as one line (the CLI exits with code 2)."""

from __future__ import annotations


class RobustlabError(ValueError):
    """Bad input: the message says what was expected and what was found."""


class UnsupportedOperation(RobustlabError):
    """A model contains an operation that a converter or a bound engine does not support."""


def _key(name: str) -> str:
    return str(name).lower().replace("_", "-").replace(" ", "-")


def did_you_mean(name: str, known) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``name`` (difflib), else ``""``."""
    import difflib

    names = {_key(k): str(k) for k in known}
    close = difflib.get_close_matches(_key(name), list(names), n=1, cutoff=0.6)
    return f"; did you mean '{names[close[0]]}'?" if close else ""


def unknown(kind: str, name: str, known) -> RobustlabError:
    """The error for an unknown name: the known names, and the closest one (difflib)."""
    known = list(known)
    listed = ", ".join(map(str, known))
    return RobustlabError(f"unknown {kind} '{name}'; known: {listed}{did_you_mean(name, known)}")


def canonical(name: str, known) -> str:
    """``name`` spelled as a known name when it differs only in case, hyphens or underscores
    (``alpha_crown`` -> ``alpha-crown``, ``gaussian-noise`` -> ``gaussian_noise``), else as it is."""
    if name in known:
        return name
    by_key = {_key(k): k for k in known}
    return by_key.get(_key(name), name)

"""Errors that robustlab reports to a user as one line (the CLI exits with code 2)."""

from __future__ import annotations

import difflib


class RobustlabError(ValueError):
    """Bad input: the message says what was expected and what was found. ``param``: the
    argument the message starts with (``n must be ...``); the command line says its flag."""

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnsupportedOperation(RobustlabError):
    """A model contains an operation that a converter or a bound engine does not support."""


def _key(name: str) -> str:
    return str(name).lower().replace("_", "-").replace(" ", "-")


def did_you_mean(name: str, known) -> str:
    """``"; did you mean 'x'?"``: the known names that start with ``name`` (at most three), else
    the closest one (difflib), else ``""``."""
    names = {_key(k): str(k) for k in known}
    key = _key(name)
    close = [k for k in names if k.startswith(key) and k != key][:3] if key else []
    close = close or difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    if not close:
        return ""
    quoted = [f"'{names[k]}'" for k in close]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"; did you mean {listed}?"


def unknown(kind: str, name: str, known) -> RobustlabError:
    """The error for an unknown name: the known names, and the closest one (difflib)."""
    known = list(known)
    listed = ", ".join(map(str, known))
    return RobustlabError(f"unknown {kind} '{name}'; known: {listed}{did_you_mean(name, known)}")


def canonical(name: str, known, aliases: dict | None = None) -> str:
    """``name`` spelled as a known name when it differs only in case, hyphens or underscores
    (``alpha_crown`` -> ``alpha-crown``, ``gaussian-noise`` -> ``gaussian_noise``) or is one of
    ``aliases`` (``ig`` -> ``integrated-gradients``), else as it is."""
    if name in known:
        return name
    by_key = {_key(k): k for k in known}
    by_key.update({_key(k): v for k, v in (aliases or {}).items()})
    return by_key.get(_key(name), name)

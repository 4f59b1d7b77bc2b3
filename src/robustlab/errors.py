"""Errors that robustlab reports to a user as one line (the CLI exits with code 2)."""

from __future__ import annotations


class RobustlabError(ValueError):
    """Bad input: the message says what was expected and what was found."""


class UnsupportedOperation(RobustlabError):
    """A model contains an operation that a converter or a bound engine does not support."""

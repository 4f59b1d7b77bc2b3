"""Shared pieces of the fuzz suite (hypothesis): example budgets per profile and the one-line check.

Profiles (tests/conftest.py): ``ci`` (the default: seeded, every run draws the same cases, fast) and
``long`` (``ROBUSTLAB_FUZZ=long``: random draws, 10 to 50 times as many cases per target).
"""

from __future__ import annotations

import os

LONG = os.environ.get("ROBUSTLAB_FUZZ") == "long"


def examples(ci: int, long: int = 50) -> int:
    """The number of cases for a target: ``ci`` in the CI profile, ``long`` times more in the long
    one."""
    return ci * long if LONG else ci


def assert_one_line_or_success(code: int, out: str, err: str, what: str) -> None:
    """A command ends in success, or in one line on stderr and exit code 2: never a traceback,
    never exit 1 (an internal error)."""
    assert "Traceback" not in err, f"{what}: traceback\n{err}"
    assert code in (0, 2), f"{what}: exit {code}: {err.strip()}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {err!r}"

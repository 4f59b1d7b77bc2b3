"""Paths: robustlab's home folder; output paths whose missing folders are created, and a path that
cannot be written as a one-line error.

Commands check their output paths before they compute, so a typo in ``--out`` costs nothing, and
create the folders when they write.
"""

from __future__ import annotations

import os
from pathlib import Path

from robustlab.errors import RobustlabError


def home() -> Path:
    """robustlab's own folder: ``$ROBUSTLAB_HOME``, default ``~/.robustlab`` (caches, run history)."""
    return Path(os.environ.get("ROBUSTLAB_HOME") or Path.home() / ".robustlab")


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _error(what: str, rest: str) -> RobustlabError:
    """``what`` + ``rest`` as an error; ``what`` a parameter's name (``out``) lets the CLI say its
    flag (``--out``)."""
    return RobustlabError(f"{what}{rest}", param=what if what.isidentifier() else None)


def _folder(path: Path, what: str, create: bool) -> None:
    """Create ``path`` (``create``) or only check that it could be: its nearest existing ancestor
    is a writable folder."""
    try:
        if path.exists() and not path.is_dir():
            raise _error(what, f": cannot create the folder {path} (a file has that name)")
        ancestor = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        if not ancestor.is_dir():
            raise _error(what, f": cannot create the folder {path} (Not a directory)")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            if ancestor == path:
                raise _error(what, f": the folder {path} is not writable")
            raise _error(what, f": cannot create the folder {path} (Permission denied)")
        if create:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(what, f": cannot create the folder {path} ({_why(e)})") from None


def output_folder(path: Path | str, what: str = "out", create: bool = True) -> Path:
    """``path`` as a writable folder, created with its parents when missing (``create=False``:
    only checked, so that a command that fails later leaves nothing behind)."""
    path = Path(path)
    try:
        if path.is_file():
            raise _error(what, f" expects a folder; found the file {path}")
    except OSError as e:
        raise _error(what, f": cannot use {path} ({_why(e)})") from None
    _folder(path, what, create)
    return path


def output_file(path: Path | str, what: str = "out", create: bool = True) -> Path:
    """``path`` as a writable file path whose folder exists (created when missing; ``create=False``:
    only checked)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise _error(what, f" expects a file path; found the folder {path}")
        _folder(path.parent, what, create)
        if path.exists() and not os.access(path, os.W_OK):
            raise _error(what, f": the file {path} is not writable")
    except OSError as e:
        raise cannot_write(path, e, what) from None
    return path


def cannot_write(path: Path | str, e: OSError, what: str = "out") -> RobustlabError:
    """The one-line error for a write that failed after the checks (disk full, permissions)."""
    return _error(what, f": cannot write {path} ({_why(e)})")

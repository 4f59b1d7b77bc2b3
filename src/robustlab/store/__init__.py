"""Run history in SQLite: every CLI run with its command, model hash, data, settings, metrics and
report path. Default file ``~/.robustlab/runs.sqlite`` (``$ROBUSTLAB_HOME/runs.sqlite``); override
with ``ROBUSTLAB_DB`` or ``--db``.

Several commands may write one file at once: the database is in WAL mode, a writer waits up to
``BUSY_TIMEOUT_S`` for another's lock, and a write that still finds it locked is retried whole."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from robustlab.errors import RobustlabError
from robustlab.paths import home, output_file

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    command TEXT NOT NULL,
    model TEXT,
    model_hash TEXT,
    data TEXT,
    settings TEXT NOT NULL,
    metrics TEXT NOT NULL,
    report TEXT
)
"""


@dataclass(frozen=True)
class Run:
    """One recorded run."""

    id: int
    created: str
    command: str
    model: str | None
    model_hash: str | None
    data: str | None
    settings: dict
    metrics: dict
    report: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def default_path() -> Path:
    """``$ROBUSTLAB_DB`` if set, else ``runs.sqlite`` in robustlab's home (``$ROBUSTLAB_HOME``,
    default ``~/.robustlab``)."""
    env = os.environ.get("ROBUSTLAB_DB")
    return Path(env) if env else home() / "runs.sqlite"


SQLITE_MAX = 2**63 - 1  # SQLite's largest integer
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another one's lock (SQLite's busy timeout)
RETRIES = 5  # then a "database is locked" that got past the busy timeout is retried this often


def _locked(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _retrying(work: Callable[[], T]) -> T:
    """``work()``, retried with growing pauses while the database is locked. A failed write
    transaction is rolled back whole, so a retry neither loses nor repeats a row."""
    for attempt in range(RETRIES + 1):
        try:
            return work()
        except sqlite3.OperationalError as e:
            if not _locked(e):
                raise
            if attempt == RETRIES:
                raise RobustlabError(
                    f"the run history stayed locked by another process ({e})"
                ) from None
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _session(path: Path | str | None) -> Iterator[sqlite3.Connection]:
    """A connection in WAL mode (readers never block the writer, nor it them) with a busy
    timeout; one transaction, committed on success, rolled back on error; always closed."""
    path = output_file(path or default_path(), "run history")
    try:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    except sqlite3.DatabaseError as e:
        raise RobustlabError(f"{path}: not a usable run-history database ({e})") from None
    try:
        try:
            _retrying(lambda: con.execute("PRAGMA journal_mode=WAL"))
            with con:
                con.execute(SCHEMA)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _locked(e):
                raise
            raise RobustlabError(f"{path}: not a usable run-history database ({e})") from None
        with con:
            yield con
    finally:
        con.close()


def record(
    command: str,
    *,
    model: str | None,
    model_hash: str | None,
    data: str | None,
    settings: dict,
    metrics: dict,
    report: str | None,
    db: Path | str | None = None,
) -> int:
    """Store a run and return its id (safe while other processes write the same file)."""
    row = (
        time.strftime("%Y-%m-%d %H:%M:%S"),
        command,
        model,
        model_hash,
        data,
        json.dumps(settings),
        json.dumps(metrics),
        report,
    )

    def insert() -> int:
        with _session(db) as con:
            cur = con.execute(
                "INSERT INTO runs (created, command, model, model_hash, data, settings, metrics,"
                " report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cur.lastrowid)

    return _retrying(insert)


def _row(r: tuple) -> Run:
    return Run(r[0], r[1], r[2], r[3], r[4], r[5], _settings(json.loads(r[6])),
               json.loads(r[7]), r[8])  # fmt: skip


def _settings(s: dict) -> dict:
    """Settings of an older run in today's words: a smooth run (``n0``) recorded before report
    schema 2 called its Monte-Carlo draws ``n`` (now ``samples``; ``n`` counts examples)."""
    if "n0" in s and "samples" not in s and "n" in s:
        s = {("samples" if k == "n" else k): v for k, v in s.items()}
    return s


def list_runs(db: Path | str | None = None, limit: int = 50) -> list[Run]:
    """The most recent runs, newest first."""
    limit = min(limit, SQLITE_MAX)  # "all of them"
    with _session(db) as con:
        rows = con.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [_row(r) for r in rows]


def get_run(run_id: int, db: Path | str | None = None) -> Run:
    """One run by id; an error naming the id when it does not exist."""
    if not 0 <= run_id <= SQLITE_MAX:  # no such row can exist
        raise RobustlabError(f"no run with id {run_id} in {db or default_path()}")
    with _session(db) as con:
        r = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if r is None:
        raise RobustlabError(f"no run with id {run_id} in {db or default_path()}")
    return _row(r)


def compare(run_ids: list[int], db: Path | str | None = None) -> tuple[list[str], list[list[str]]]:
    """A side-by-side table: header (metric, run ids...) and one row per field or metric."""
    runs = [get_run(i, db) for i in run_ids]
    header = ["", *[f"run {r.id}" for r in runs]]
    rows = [
        ["command", *[r.command for r in runs]],
        ["model", *[str(r.model) for r in runs]],
        ["data", *[str(r.data) for r in runs]],
        ["created", *[r.created for r in runs]],
    ]
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.metrics if k not in keys]
    for k in keys:
        rows.append([k, *[format_value(r.metrics.get(k)) for r in runs]])
    return header, rows


def format_value(v) -> str:
    """A metric's value as the tables show it (4 decimals; '-' for none)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)

"""The run history under concurrency: processes writing one SQLite file at once lose nothing."""

import csv
import sqlite3
import subprocess
import sys

import pytest

from robustlab import store

from ..conftest import SHARED

TEST = SHARED / "benchmarks" / "test"

WRITER = """
import sys, time
from robustlab import store
db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for k in range(n):
    store.record(f"writer {tag} {k}", model=tag, model_hash=None, data="d", settings={"k": k},
                 metrics={"clean_accuracy": k / n}, report=None, db=db)
    if k % 10 == 0:
        store.list_runs(db, 5)  # a reader among the writes
"""


def test_wal_mode_and_busy_timeout(tmp_path):
    db = tmp_path / "h.sqlite"
    store.record(
        "c", model=None, model_hash=None, data=None, settings={}, metrics={}, report=None, db=db
    )
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert store.BUSY_TIMEOUT_S >= 10


def test_two_processes_recording_at_once_lose_nothing(tmp_path):
    db, n = tmp_path / "h.sqlite", 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), tag, str(n)], stderr=subprocess.PIPE, text=True
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = store.list_runs(db, limit=10 * n)
    assert len(runs) == 2 * n and len({r.id for r in runs}) == 2 * n
    assert sorted(r.command for r in runs) == sorted(
        f"writer {t} {k}" for t in "ab" for k in range(n)
    )


def test_a_lock_held_past_the_busy_timeout_is_retried(tmp_path, monkeypatch):
    """Another process holding the write lock longer than the busy timeout: the write waits,
    retries and lands once the lock is released."""
    db = tmp_path / "h.sqlite"
    store.list_runs(db)  # creates the file
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.05)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "con = sqlite3.connect(sys.argv[1]); con.execute('BEGIN IMMEDIATE')\n"
         "print('locked', flush=True); time.sleep(0.6); con.rollback()", str(db)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    run_id = store.record(
        "late", model=None, model_hash=None, data=None, settings={}, metrics={}, report=None, db=db
    )
    holder.wait(timeout=30)
    assert [r.id for r in store.list_runs(db)] == [run_id]


@pytest.mark.slow
@pytest.mark.skipif(not TEST.exists(), reason="shared benchmarks not present")
def test_verify_benchmark_and_an_audit_writing_one_file(tmp_path):
    """A 2-worker verify-benchmark writing its results and an audit and an attack recording their
    runs into the same SQLite file at the same time: every result and every run is there."""
    rows = list(csv.reader((TEST / "test_instances.csv").open()))
    instances = tmp_path / "instances.csv"
    with instances.open("w") as f:
        for k in range(1):  # (more repetitions: distinct timeouts, distinct keys)
            for onnx, vnnlib, timeout in rows:
                f.write(f"{TEST / onnx},{TEST / vnnlib},{float(timeout) + k}\n")
    db = tmp_path / "shared.sqlite"
    cli = [sys.executable, "-c", "from robustlab.cli import main; main()"]
    bench = subprocess.Popen(
        [*cli, "verify-benchmark", str(instances), "--workers", "2", "--results-db", str(db), "--out", str(tmp_path / "r.csv")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    mlp = ["--model", "zoo:mlp", "--data", "digits", "--n", "4", "--db", str(db)]
    commands = [
        [*cli, "audit", *mlp, "--eps", "0,0.05", "--budget", "5", "--out", str(tmp_path / "au")],
        [*cli, "attack", *mlp, "--eps", "0.05", "--attacks", "fgsm", "--out", str(tmp_path / "a.json")],
    ]  # fmt: skip
    for cmd in commands:  # one after the other, while the benchmark runs
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    _, err = bench.communicate(timeout=600)
    assert bench.returncode == 0, err
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM verify_results").fetchone()[0] == len(rows)
    con.close()
    assert len(store.list_runs(db)) == 2

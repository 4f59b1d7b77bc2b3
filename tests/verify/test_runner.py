import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from robustlab.verify.runner import read_expected, run_benchmark, summarize

from ..conftest import SHARED

TEST = SHARED / "benchmarks" / "test"
pytestmark = pytest.mark.skipif(not TEST.exists(), reason="shared benchmarks not present")


def _instances(tmp_path, repeat: int = 1):
    """The shared test instances, each with a distinct timeout per repetition (distinct keys)."""
    rows = list(csv.reader((TEST / "test_instances.csv").open()))
    path = tmp_path / "instances.csv"
    with path.open("w") as f:
        for k in range(repeat):
            for onnx, vnnlib, timeout in rows:
                f.write(f"{TEST / onnx},{TEST / vnnlib},{float(timeout) + k}\n")
    return path, len(rows) * repeat


def test_run_and_resume(tmp_path):
    inst, n = _instances(tmp_path)
    seen = []
    results = run_benchmark(
        inst,
        db=tmp_path / "r.sqlite",
        out_csv=tmp_path / "r.csv",
        on_result=lambda *a: seen.append(a),
    )
    assert len(results) == n == len(seen)
    summary = summarize(results, read_expected(TEST / "expected.csv"))
    assert summary["wrong"] == 0 and summary["counts"].get("holds") == 4
    again = []
    results2 = run_benchmark(
        inst,
        db=tmp_path / "r.sqlite",
        out_csv=tmp_path / "r.csv",
        on_result=lambda *a: again.append(a),
    )
    assert again == [] and [r["result"] for r in results2] == [r["result"] for r in results]
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == n


def test_interrupted_run_completes_without_loss_or_repeat(tmp_path):
    inst, n = _instances(tmp_path, repeat=6)
    out, db = tmp_path / "r.csv", tmp_path / "r.sqlite"
    cmd = [
        sys.executable,
        "-c",
        "from robustlab.cli import main; main()",
        "verify-benchmark",
        str(inst),
        "--out",
        str(out),
        "--db",
        str(db),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 4:  # header + 3 results
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(out.read_text().splitlines()) - 1
    assert 3 <= first < n, "the run should be interrupted part way"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    keys = [(r["onnx"], r["vnnlib"]) for r in rows]
    assert len(rows) == n
    con = sqlite3.connect(db)
    assert con.execute(
        "SELECT COUNT(*), COUNT(DISTINCT onnx || vnnlib || timeout) FROM verify_results"
    ).fetchone() == (n, n)
    assert len(set(keys)) == 5  # five instances, six repetitions each


def test_dask_backend_on_loopback(tmp_path):
    pytest.importorskip("distributed")
    inst, n = _instances(tmp_path)
    results = run_benchmark(
        inst, db=tmp_path / "d.sqlite", out_csv=tmp_path / "d.csv", backend="dask", workers=2
    )
    assert len(results) == n
    assert summarize(results, read_expected(TEST / "expected.csv"))["wrong"] == 0


def _fake(names, timeout=1.0):
    from robustlab.verify.runner import Instance

    return [Instance("/n.onnx", f"/{name}.vnnlib", timeout) for name in names]


def test_a_worker_that_overruns_is_ended_and_recorded_timeout():
    from robustlab.verify.runner import _local

    from ._runs import sleepy

    pending = _fake(["slow-1", "fast-1", "slow-2", "fast-2", "fast-3"])
    start = time.monotonic()
    seen = {}
    for inst, verdict, seconds in _local(pending, 2, grace=0.5, run=sleepy):
        seen[inst.vnnlib] = (verdict, seconds, time.monotonic() - start)
    assert len(seen) == 5
    for name, (verdict, seconds, _) in seen.items():
        assert verdict == ("holds" if "fast" in name else "timeout"), seen
        if verdict == "timeout":  # ended at its timeout + grace, not later
            assert 1.5 <= seconds < 1.5 + 2.0, seen
    assert time.monotonic() - start < 60  # worker start-up included


def test_a_worker_that_dies_is_recorded_and_replaced():
    from robustlab.verify.runner import _local

    from ._runs import crashing

    out = {i.vnnlib: v for i, v, _ in _local(_fake(["a", "crash", "b"]), 1, run=crashing)}
    assert out == {"/a.vnnlib": "violated", "/crash.vnnlib": "error", "/b.vnnlib": "violated"}


def test_the_instance_after_a_timeout_runs_in_a_fresh_worker():
    """verify may leave a timed-out instance's work running on an abandoned thread: the
    worker is replaced, so the next instance does not share its process (memory, CPU)."""
    from robustlab.verify.runner import _local

    from ._runs import timing_out

    out = {i.vnnlib: v for i, v, _ in _local(_fake(["a", "b", "late", "c"]), 1, run=timing_out)}
    assert out["/late.vnnlib"] == "timeout"
    assert out["/a.vnnlib"] == out["/b.vnnlib"]  # one worker while nothing timed out
    assert out["/c.vnnlib"] != out["/b.vnnlib"]  # a fresh one after the timeout


def test_timeout_cap(tmp_path):
    from robustlab.verify.runner import read_instances

    inst, n = _instances(tmp_path)
    capped = read_instances(inst, timeout_scale=2.0, timeout_cap=3.0)
    assert len(capped) == n and max(i.timeout for i in capped) == 3.0

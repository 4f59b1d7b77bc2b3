"""Benchmark runner: every instance of an ``instances.csv`` through the verifier, on a local
process pool or a Dask cluster; each result is written to SQLite and CSV as soon as it is known,
so an interrupted run resumes without redoing or repeating anything."""

from __future__ import annotations

import ast
import csv
import multiprocessing as mp
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import torch

from robustlab.bounds import heap
from robustlab.errors import RobustlabError
from robustlab.shards import dask_client
from robustlab.verify.verifier import verify

GRACE = 2.0  # seconds past an instance's timeout before its worker process is ended

SCHEMA = """
CREATE TABLE IF NOT EXISTS verify_results (
    onnx TEXT NOT NULL,
    vnnlib TEXT NOT NULL,
    timeout REAL NOT NULL,
    result TEXT NOT NULL,
    seconds REAL NOT NULL,
    finished TEXT NOT NULL,
    PRIMARY KEY (onnx, vnnlib, timeout)
)
"""


@dataclass(frozen=True)
class Instance:
    onnx: str  # absolute paths; several networks (VNN-COMP 2026): "[('f', PATH), ...]"
    vnnlib: str
    timeout: float

    def models(self) -> tuple[str, dict[str, str]]:
        """The first network's file and every named network's (empty for one network)."""
        if not self.onnx.startswith("["):
            return self.onnx, {}
        pairs = ast.literal_eval(self.onnx)
        return pairs[0][1], dict(pairs)


def _resolve(folder: Path, p: str) -> str:
    """A path relative to the CSV's folder; ``X.gz`` when only the gzipped file exists."""
    path = (folder / p.strip()).resolve()
    gz = path.with_name(path.name + ".gz")
    return str(gz if not path.exists() and gz.exists() else path)


def _models_field(folder: Path, field: str, where: str) -> str:
    """The onnx field: one path, or a list of (network name, path) pairs (VNN-COMP 2026)."""
    if not field.strip().startswith("["):
        return _resolve(folder, field)
    try:
        pairs = ast.literal_eval(field.strip())
        pairs = [(str(n), _resolve(folder, str(p))) for n, p in pairs]
    except (ValueError, SyntaxError, TypeError) as e:
        raise RobustlabError(
            f"{where}: expected a list of (network, path) pairs; found {field[:60]!r} ({e})"
        ) from None
    if not pairs:
        raise RobustlabError(f"{where}: expected a list of (network, path) pairs; found []")
    return repr(pairs)


def read_instances(
    path: str | Path, timeout_scale: float = 1.0, timeout_cap: float | None = None
) -> list[Instance]:
    """Rows ``onnx,vnnlib,timeout`` (paths relative to the CSV's folder); each timeout is
    multiplied by ``timeout_scale`` and capped at ``timeout_cap`` seconds."""
    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"instances file not found: {path}")
    if timeout_cap is not None and not timeout_cap > 0:
        raise RobustlabError(f"timeout_cap must be positive; found {timeout_cap}")
    out = []
    with path.open() as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise RobustlabError(f"{path}:{lineno}: expected onnx,vnnlib,timeout; found {row}")
            try:
                t = float(row[2]) * timeout_scale
            except ValueError:
                if lineno == 1:
                    continue  # a header
                raise RobustlabError(
                    f"{path}:{lineno}: timeout must be a number; found {row[2]!r}"
                ) from None
            if timeout_cap is not None:
                t = min(t, timeout_cap)
            onnx = _models_field(path.parent, row[0], f"{path}:{lineno}")
            out.append(Instance(onnx, _resolve(path.parent, row[1]), t))
    if not out:
        raise RobustlabError(f"{path}: no instances")
    return out


def read_expected(path: str | Path) -> dict[tuple[str, str], str]:
    """``expected.csv`` (onnx, vnnlib, timeout, expected) keyed by file names."""
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    return {(Path(r["onnx"]).name, Path(r["vnnlib"]).name): r["expected"] for r in rows}


def _run_one(inst: Instance) -> tuple[Instance, str, float]:
    torch.set_num_threads(1)
    start = time.monotonic()
    return inst, verify_instance(inst), time.monotonic() - start


def verify_instance(inst: Instance) -> str:
    """The verdict for one instance (the default work of a worker process); a missing file is
    verdict ``error`` here (``verify`` raises for it)."""
    onnx, networks = inst.models()
    try:
        r = verify(onnx, inst.vnnlib, timeout=inst.timeout, networks=networks)
    except RobustlabError as e:
        print(f"{inst.vnnlib}: error: {e}", file=sys.stderr, flush=True)
        return "error"
    if r.verdict == "error":  # the reason, for whoever reads the benchmark's log
        print(f"{inst.vnnlib}: error: {r.message}", file=sys.stderr, flush=True)
    return r.verdict


def _worker(conn, run: Callable[[Instance], str]) -> None:
    """A worker process: runs the instances it receives until its pipe closes."""
    torch.set_num_threads(1)
    heap.keep_freed_memory()  # large tensors reuse freed memory (bounds/heap.py)
    conn.send("ready")
    while True:
        try:
            inst = conn.recv()
        except (EOFError, OSError):
            return
        if inst is None:
            return
        start = time.monotonic()
        try:
            verdict = run(inst)
        except Exception as e:  # a bad setting or an internal error: recorded, the run goes on
            print(f"{inst.vnnlib}: internal error: {e!r}", file=sys.stderr, flush=True)
            verdict = "error"
        conn.send((verdict, time.monotonic() - start))
        heap.release_freed_memory()  # the next instance starts from a small process


class _Process:
    """One worker process and the instance it is running (ended when it overruns)."""

    def __init__(self, ctx, run: Callable[[Instance], str]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, run), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.inst: Instance | None = None
        self.started = 0.0

    def submit(self, inst: Instance) -> None:
        self.inst, self.started = inst, time.monotonic()
        self.conn.send(inst)

    def overdue(self, now: float, grace: float) -> bool:
        return self.inst is not None and now > self.started + self.inst.timeout + grace

    def end(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


def _local(
    pending: list[Instance],
    workers: int,
    grace: float = GRACE,
    run: Callable[[Instance], str] = verify_instance,
) -> Iterator[tuple[Instance, str, float]]:
    """Each instance run by ``run`` in one of ``workers`` processes; a worker still running
    ``grace`` seconds after its instance's timeout is ended (the instance: ``timeout``) and
    replaced."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: no state inherited from the caller
    queue = list(reversed(pending))
    procs = [_Process(ctx, run) for _ in range(min(workers, len(pending)))]
    try:
        while queue or any(p.inst is not None for p in procs):
            for p in procs:
                if p.ready and p.inst is None and queue:
                    p.submit(queue.pop())
            now = time.monotonic()
            ends = [p.started + p.inst.timeout + grace for p in procs if p.inst is not None]
            wait_s = max(0.0, min(ends) - now) if ends else None
            for conn in wait([p.conn for p in procs], timeout=wait_s):
                k = next(i for i, p in enumerate(procs) if p.conn is conn)
                p = procs[k]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):  # the worker died (crash, memory)
                    inst = p.inst
                    if inst is not None:
                        code = p.proc.exitcode
                        print(f"{inst.vnnlib}: worker died ({code})", file=sys.stderr, flush=True)
                    p.end()
                    procs[k] = _Process(ctx, run)
                    if inst is not None:
                        yield inst, "error", time.monotonic() - p.started
                    continue
                if msg == "ready":
                    p.ready = True
                    continue
                inst, p.inst = p.inst, None
                if msg[0] == "timeout":
                    # verify's work may go on in an abandoned thread until its next deadline
                    # check (inside a long native operation: seconds, gigabytes): the next
                    # instance gets a fresh process, not one shared with that thread
                    p.end()
                    procs[k] = _Process(ctx, run)
                yield inst, msg[0], msg[1]
            now = time.monotonic()
            for k, p in enumerate(procs):
                if p.overdue(now, grace):
                    inst = p.inst
                    p.end()
                    procs[k] = _Process(ctx, run)
                    yield inst, "timeout", now - p.started
    finally:
        for p in procs:
            p.end()


def _dask(
    pending: list[Instance], workers: int, scheduler: str | None
) -> Iterator[tuple[Instance, str, float]]:
    with dask_client(workers, scheduler) as client:
        from distributed import as_completed  # dask_client has checked that it is installed

        futures = client.map(_run_one, pending, pure=False)
        for fut in as_completed(futures):
            yield fut.result()


def run_benchmark(
    instances_csv: str | Path,
    *,
    db: str | Path,
    out_csv: str | Path,
    backend: str = "local",
    workers: int = 1,
    timeout_scale: float = 1.0,
    timeout_cap: float | None = None,
    grace: float = GRACE,
    scheduler: str | None = None,
    on_result: Callable[[Instance, str, float, int, int], None] | None = None,
) -> list[dict]:
    """Run every instance not yet in ``db``; return all results (old and new) in file order.

    Timeouts are the file's times ``timeout_scale`` capped at ``timeout_cap``; on the local
    backend an instance still running ``grace`` seconds after its timeout is ended and recorded
    as ``timeout``."""
    if backend not in ("local", "dask"):
        raise RobustlabError(f"backend must be local or dask; found {backend!r}")
    instances = read_instances(instances_csv, timeout_scale, timeout_cap)
    con = sqlite3.connect(db, timeout=60)
    con.execute(SCHEMA)
    done = {(r[0], r[1], r[2]): (r[3], r[4]) for r in con.execute("SELECT * FROM verify_results")}
    pending = [i for i in instances if (i.onnx, i.vnnlib, i.timeout) not in done]
    out_csv = Path(out_csv)
    with out_csv.open("w", newline="") as f:  # the finished results first, then each new one
        w = csv.writer(f)
        w.writerow(["onnx", "vnnlib", "result", "seconds"])
        for i in instances:
            if (i.onnx, i.vnnlib, i.timeout) in done:
                res, sec = done[(i.onnx, i.vnnlib, i.timeout)]
                w.writerow([i.onnx, i.vnnlib, res, f"{sec:.3f}"])
    stream = (
        _local(pending, workers, grace)
        if backend == "local"
        else _dask(pending, workers, scheduler)
    )
    for k, (inst, verdict, seconds) in enumerate(stream, 1):
        with con:
            con.execute(
                "INSERT OR REPLACE INTO verify_results VALUES (?, ?, ?, ?, ?, ?)",
                (
                    inst.onnx,
                    inst.vnnlib,
                    inst.timeout,
                    verdict,
                    seconds,
                    time.strftime("%Y-%m-%d %H:%M:%S"),
                ),
            )
        with out_csv.open("a", newline="") as f:
            csv.writer(f).writerow([inst.onnx, inst.vnnlib, verdict, f"{seconds:.3f}"])
            f.flush()
            os.fsync(f.fileno())
        done[(inst.onnx, inst.vnnlib, inst.timeout)] = (verdict, seconds)
        if on_result:
            on_result(inst, verdict, seconds, k, len(pending))
    con.close()
    return [
        {
            "onnx": i.onnx,
            "vnnlib": i.vnnlib,
            "result": done[(i.onnx, i.vnnlib, i.timeout)][0],
            "seconds": done[(i.onnx, i.vnnlib, i.timeout)][1],
        }
        for i in instances
    ]


def summarize(results: list[dict], expected: dict[tuple[str, str], str] | None = None) -> dict:
    """Counts per answer, total and median time, and wrong answers against ``expected``."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    secs = [r["seconds"] for r in results]
    summary = {
        "instances": len(results),
        "counts": counts,
        "total_seconds": sum(secs),
        "median_seconds": statistics.median(secs) if secs else 0.0,
    }
    if expected is not None:
        wrong = []
        for r in results:
            exp = expected.get((Path(r["onnx"]).name, Path(r["vnnlib"]).name))
            if (
                exp in ("holds", "violated")
                and r["result"] in ("holds", "violated")
                and r["result"] != exp
            ):
                wrong.append(r)
        summary["wrong"] = len(wrong)
        summary["wrong_instances"] = [
            (Path(r["onnx"]).name, Path(r["vnnlib"]).name, r["result"]) for r in wrong
        ]
    return summary

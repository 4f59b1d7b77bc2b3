"""A job's data in shards, run in this process or as Dask tasks, and the results in shard order.

A long job (``attack``, ``certify``) cuts its data into shards of ``shard_size`` points; each shard
is one task with its own seed, derived from the job's seed and the shard's index, and the job merges
the results in shard order. So the numbers are the same whichever backend runs the shards and in
whatever order they finish. On Dask a task lost with its worker is run again (the scheduler
reschedules it; ``RETRIES`` more for errors), and results are kept by shard index: none is lost or
counted twice. Without an address a ``LocalCluster`` of ``workers`` processes is started on
127.0.0.1 only. Dask (``distributed``) is an optional dependency: ``pip install 'robustlab[dask]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from robustlab.errors import RobustlabError, unknown

BACKENDS = ("local", "dask")
DASK_SHARD_SIZE = 64  # points per task when none is given: enough tasks to balance, few enough
RETRIES = 2  # extra tries of a task that raised (a worker's death is rescheduled by Dask itself)

T = TypeVar("T")


@dataclass(frozen=True)
class Backend:
    """Where shards run: ``local`` (this process, one after another) or ``dask`` (a cluster at
    ``scheduler``, or a loopback ``LocalCluster`` of ``workers`` processes). ``shard_size``: points
    per shard (None: the whole data is one shard, and its seed is the job's seed)."""

    name: str = "local"
    workers: int = 2
    scheduler: str | None = None
    shard_size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise unknown("backend", self.name, BACKENDS)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise RobustlabError(
                f"workers must be a positive integer; found {self.workers!r}", param="workers"
            )
        size = self.shard_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise RobustlabError(
                f"shard_size must be a positive integer; found {size!r}", param="shard_size"
            )


def default_shard_size(backend: str) -> int | None:
    """Points per shard when none is given: ``DASK_SHARD_SIZE`` on Dask, one shard locally."""
    return DASK_SHARD_SIZE if backend == "dask" else None


def shard_bounds(n: int, shard_size: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each shard of ``range(n)``."""
    size = n if not shard_size else shard_size
    return [(a, min(a + size, n)) for a in range(0, n, max(size, 1))] or [(0, 0)]


def shard_seeds(seed: int, count: int) -> list[int]:
    """One seed per shard: the job's own seed for a single shard, else seeds drawn from numpy's
    ``SeedSequence(seed)`` (independent streams, the same for every backend)."""
    if count == 1:
        return [seed]
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def run_shards(
    task: Callable[..., T],
    shards: Sequence[Any],
    backend: Backend,
    shared: Sequence[Any] = (),
    done: Callable[[int, int], None] | None = None,
) -> list[T]:
    """``task(*shared, shard)`` for every shard, results in shard order. ``shared`` (the model,
    say) is sent to each Dask worker once; ``done(finished, total)`` after each shard."""
    if backend.name == "local":
        out = []
        for k, shard in enumerate(shards):
            out.append(task(*shared, shard))
            if done:
                done(k + 1, len(shards))
        return out
    return _dask(task, shards, backend, shared, done)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise RobustlabError("the dask backend needs: pip install 'robustlab[dask]'") from None
    return distributed


def _local_cluster(workers: int) -> Any:
    """A ``LocalCluster`` of ``workers`` one-thread processes bound to 127.0.0.1 only."""
    return _distributed().LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        processes=True,
    )


@contextmanager
def dask_client(workers: int, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster at ``scheduler``, or of a ``LocalCluster`` of
    ``workers`` one-thread processes bound to 127.0.0.1 only (closed on exit)."""
    client_of = _distributed().Client
    if scheduler:
        with client_of(scheduler) as client:
            yield client
        return
    with _local_cluster(workers) as cluster, client_of(cluster) as client:
        yield client


@contextmanager
def session(backend: Backend) -> Iterator[Backend]:
    """``backend`` for a job of many ``run_shards`` calls (the audit's stages): on Dask without a
    scheduler one ``LocalCluster`` is started for all of them (closed on exit) and the backend
    yielded names its address; otherwise ``backend`` itself."""
    if backend.name != "dask" or backend.scheduler:
        yield backend
        return
    with _local_cluster(backend.workers) as cluster:
        yield replace(backend, scheduler=cluster.scheduler_address)


def _dask(task, shards, backend: Backend, shared, done) -> list:
    with dask_client(backend.workers, backend.scheduler) as client:
        from distributed import as_completed  # dask_client has checked that it is installed

        args = [client.scatter(s, broadcast=True) for s in shared]
        futures = [
            client.submit(
                task, *args, shard, key=f"shard-{k}-{id(shards)}", pure=False, retries=RETRIES
            )  # fmt: skip
            for k, shard in enumerate(shards)
        ]
        index = {f.key: k for k, f in enumerate(futures)}
        out: dict[int, Any] = {}
        for fut in as_completed(futures):
            out[index[fut.key]] = fut.result()
            if done:
                done(len(out), len(shards))
        return [out[k] for k in range(len(shards))]

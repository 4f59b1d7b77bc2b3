"""Sobol sensitivity indices by a quasi-Monte Carlo pick-freeze design (Saltelli et al. 2010,
doi:10.1016/j.cpc.2009.09.018): first-order indices by Saltelli's estimator, total-order indices
by Jansen's (1999)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import qmc

from robustlab.errors import RobustlabError
from robustlab.shards import Backend, run_shards


@dataclass(frozen=True)
class SobolIndices:
    """First- and total-order indices per variable, and how many points ``fn`` evaluated."""

    first_order: np.ndarray | None  # (n_vars,), None when not asked for
    total_order: np.ndarray  # (n_vars,)
    variance: float
    n_evaluations: int

    def to_dict(self) -> dict:
        first = None if self.first_order is None else self.first_order.tolist()
        return {
            "first_order": first,
            "total_order": self.total_order.tolist(),
            "variance": self.variance,
            "n_evaluations": self.n_evaluations,
        }


def sobol_design(n_vars: int, n: int, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Matrices A and B (n, n_vars) of a scrambled Sobol sequence in 2 * n_vars dimensions."""
    if not (isinstance(n_vars, int) and n_vars >= 1):
        raise RobustlabError(f"n_vars must be a positive integer; found {n_vars!r}")
    if not (isinstance(n, int) and n >= 2):
        raise RobustlabError(f"n (designs) must be an integer >= 2; found {n!r}")
    sampler = qmc.Sobol(2 * n_vars, scramble=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when n is not a power of 2
        ab = sampler.random(n)
    return ab[:, :n_vars], ab[:, n_vars:]


def _values(fn: Callable, points: np.ndarray) -> np.ndarray:
    v = np.asarray(fn(points), dtype=np.float64)
    if v.shape != (len(points),):
        raise RobustlabError(
            f"fn must map (N, n_vars) points to (N,) values; found shape {v.shape} "
            f"for {len(points)} points"
        )
    return v


def _evaluate(fn: Callable, points: np.ndarray, batch_size: int | None) -> np.ndarray:
    step = batch_size or len(points)
    return np.concatenate([_values(fn, points[i : i + step]) for i in range(0, len(points), step)])


def _matrices(a: np.ndarray, b: np.ndarray, first_order: bool) -> Iterator[np.ndarray]:
    """The design's matrices in order: A, B (for first-order indices), then A with column i
    from B for each i (made one at a time)."""
    yield a
    if first_order:
        yield b
    for i in range(a.shape[1]):
        ab = a.copy()
        ab[:, i] = b[:, i]
        yield ab


def _evaluate_shards(fn, matrices, batch_size: int | None, backend: Backend) -> list[np.ndarray]:
    """``_evaluate`` of every matrix, its batches of ``batch_size`` points (the same batches as
    in one process) grouped into tasks of about ``backend.shard_size`` points."""
    n = len(matrices[0])
    step = batch_size or n
    batches = [(k, i) for k in range(len(matrices)) for i in range(0, n, step)]
    per = max(1, (backend.shard_size or step) // step)
    tasks = [[matrices[k][i : i + step] for k, i in batches[j : j + per]]
             for j in range(0, len(batches), per)]  # fmt: skip
    values = [v for part in run_shards(_batches, tasks, backend, shared=(fn,)) for v in part]
    per_matrix = len(values) // len(matrices)
    return [
        np.concatenate(values[k * per_matrix : (k + 1) * per_matrix]) for k in range(len(matrices))
    ]


def _batches(fn, batches: list[np.ndarray]) -> list[np.ndarray]:
    """One task's batches of points, evaluated (a Dask task)."""
    return [_values(fn, points) for points in batches]


def sobol_indices(
    fn: Callable[[np.ndarray], np.ndarray],
    n_vars: int,
    *,
    n: int = 1024,
    seed: int | None = 0,
    first_order: bool = True,
    batch_size: int | None = None,
    backend: Backend = Backend(),
) -> SobolIndices:
    """Sobol indices of ``fn`` (vectorised: (N, n_vars) points of the unit cube -> (N,)).

    Costs n (n_vars + 2) evaluations, or n (n_vars + 1) with ``first_order=False`` (Jansen's
    total-order estimator needs f(A) and f(A with column i from B) only). ``n`` a power of 2
    keeps the Sobol sequence balanced. Only one block of ``batch_size`` points is held at a time.
    ``backend`` (``robustlab.shards``) other than one local run: the same batches as tasks of
    about ``shard_size`` points, in this process or on Dask (``fn`` must pickle), so the same
    indices; the whole design and its values are then held at once."""
    a, b = sobol_design(n_vars, n, seed)
    if backend.name == "local" and not backend.shard_size:
        values = (_evaluate(fn, m, batch_size) for m in _matrices(a, b, first_order))
    else:
        values = iter(_evaluate_shards(fn, list(_matrices(a, b, first_order)), batch_size, backend))
    fa = next(values)
    fb = next(values) if first_order else None
    var = float(np.var(fa if fb is None else np.concatenate([fa, fb]), ddof=1))
    if not var > 0:
        raise RobustlabError("fn is constant on the design: Sobol indices are undefined")
    total = np.empty(n_vars)
    first = np.empty(n_vars) if first_order else None
    for i, fab in enumerate(values):
        total[i] = np.mean((fa - fab) ** 2) / (2 * var)
        if first is not None:
            first[i] = np.mean(fb * (fab - fa)) / var
    evals = n * (n_vars + (2 if first_order else 1))
    return SobolIndices(first, total, var, evals)

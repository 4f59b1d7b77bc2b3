"""Sobol sensitivity indices by a quasi-Monte Carlo pick-freeze design (Saltelli et al. 2010,
doi:10.1016/j.cpc.2009.09.018): first-order indices by Saltelli's estimator, total-order indices
by Jansen's (1999)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import qmc

from robustlab.errors import RobustlabError


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


def _evaluate(fn: Callable, points: np.ndarray, batch_size: int | None) -> np.ndarray:
    step = batch_size or len(points)
    out = []
    for i in range(0, len(points), step):
        v = np.asarray(fn(points[i : i + step]), dtype=np.float64)
        if v.shape != (len(points[i : i + step]),):
            raise RobustlabError(
                f"fn must map (N, n_vars) points to (N,) values; found shape {v.shape} "
                f"for {len(points[i : i + step])} points"
            )
        out.append(v)
    return np.concatenate(out)


def sobol_indices(
    fn: Callable[[np.ndarray], np.ndarray],
    n_vars: int,
    *,
    n: int = 1024,
    seed: int | None = 0,
    first_order: bool = True,
    batch_size: int | None = None,
) -> SobolIndices:
    """Sobol indices of ``fn`` (vectorised: (N, n_vars) points of the unit cube -> (N,)).

    Costs n (n_vars + 2) evaluations, or n (n_vars + 1) with ``first_order=False`` (Jansen's
    total-order estimator needs f(A) and f(A with column i from B) only). ``n`` a power of 2
    keeps the Sobol sequence balanced. Only one block of ``batch_size`` points is held at a time."""
    a, b = sobol_design(n_vars, n, seed)
    fa = _evaluate(fn, a, batch_size)
    fb = _evaluate(fn, b, batch_size) if first_order else None
    var = float(np.var(fa if fb is None else np.concatenate([fa, fb]), ddof=1))
    if not var > 0:
        raise RobustlabError("fn is constant on the design: Sobol indices are undefined")
    total = np.empty(n_vars)
    first = np.empty(n_vars) if first_order else None
    for i in range(n_vars):
        ab = a.copy()
        ab[:, i] = b[:, i]
        fab = _evaluate(fn, ab, batch_size)
        total[i] = np.mean((fa - fab) ** 2) / (2 * var)
        if first is not None:
            first[i] = np.mean(fb * (fab - fa)) / var
    evals = n * (n_vars + (2 if first_order else 1))
    return SobolIndices(first, total, var, evals)

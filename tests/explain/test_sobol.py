"""The Sobol estimator on functions whose indices are known in closed form."""

import numpy as np
import pytest

from robustlab.errors import RobustlabError
from robustlab.explain import sobol_indices

TOL = 0.01  # absolute, at n = 2**14 (observed max error over 10 seeds: 0.0013)


def ishigami(u, a=7.0, b=0.1):
    x = -np.pi + 2 * np.pi * u
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


def ishigami_indices(a=7.0, b=0.1):
    v1 = 0.5 * (1 + b * np.pi**4 / 5) ** 2
    v2 = a**2 / 8
    v13 = b**2 * np.pi**8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return np.array([v1, v2, 0]) / v, np.array([v1 + v13, v2, v13]) / v


G_A = np.array([0, 1, 4.5, 9, 99, 99, 99, 99.0])


def sobol_g(u):
    return np.prod((np.abs(4 * u - 2) + G_A) / (1 + G_A), axis=1)


def sobol_g_indices():
    vi = 1 / (3 * (1 + G_A) ** 2)
    v = np.prod(1 + vi) - 1
    return vi / v, vi * np.prod(1 + vi) / (1 + vi) / v


def test_ishigami_analytic_values():
    first, total = ishigami_indices()
    assert np.allclose(first, [0.3139, 0.4424, 0.0], atol=1e-4)
    assert np.allclose(total, [0.5576, 0.4424, 0.2437], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ishigami(seed):
    r = sobol_indices(ishigami, 3, n=2**14, seed=seed)
    first, total = ishigami_indices()
    assert np.abs(r.total_order - total).max() < TOL
    assert np.abs(r.first_order - first).max() < TOL
    assert r.n_evaluations == 2**14 * (3 + 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_sobol_g(seed):
    r = sobol_indices(sobol_g, len(G_A), n=2**14, seed=seed, batch_size=5000)
    first, total = sobol_g_indices()
    assert np.abs(r.total_order - total).max() < TOL
    assert np.abs(r.first_order - first).max() < TOL
    assert r.to_dict()["total_order"] == r.total_order.tolist()


def test_total_order_only_costs_n_times_d_plus_one():
    calls = []

    def fn(u):
        calls.append(len(u))
        return sobol_g(u)

    r = sobol_indices(fn, 8, n=256, seed=0, first_order=False, batch_size=100)
    assert r.first_order is None and sum(calls) == r.n_evaluations == 256 * 9
    assert max(calls) <= 100


def test_reproducible_and_seeded():
    a = sobol_indices(ishigami, 3, n=256, seed=5)
    b = sobol_indices(ishigami, 3, n=256, seed=5)
    c = sobol_indices(ishigami, 3, n=256, seed=6)
    assert np.array_equal(a.total_order, b.total_order)
    assert not np.array_equal(a.total_order, c.total_order)


def test_bad_input():
    with pytest.raises(RobustlabError, match="n_vars"):
        sobol_indices(ishigami, 0)
    with pytest.raises(RobustlabError, match=r"\(N,\)"):
        sobol_indices(lambda u: u, 3, n=16)
    with pytest.raises(RobustlabError, match="constant"):
        sobol_indices(lambda u: np.ones(len(u)), 3, n=16)
    with pytest.raises(RobustlabError, match="n \\(designs\\)"):
        sobol_indices(ishigami, 3, n=1)


def test_batches_as_tasks_give_the_same_indices():
    """The design's batches as shards (robustlab.shards, here in this process): the same batches,
    so the same indices, bit for bit (numpy float64 on the same points)."""
    from robustlab.shards import Backend

    calls = []

    def fn(u):
        calls.append(len(u))
        return ishigami(u)

    one = sobol_indices(fn, 3, n=256, seed=2, batch_size=100)
    sizes, calls[:] = list(calls), []
    for shard_size in (1, 250):
        sharded = sobol_indices(fn, 3, n=256, seed=2, batch_size=100,
                                backend=Backend(shard_size=shard_size))  # fmt: skip
        assert np.array_equal(sharded.total_order, one.total_order)
        assert np.array_equal(sharded.first_order, one.first_order)
        assert sorted(calls) == sorted(sizes) and sharded.variance == one.variance
        calls[:] = []

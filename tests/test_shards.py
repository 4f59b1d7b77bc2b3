"""robustlab.shards: shards, seeds, backends; attack and certify on a 2-worker Dask LocalCluster
give the local run's results, also when a worker is killed mid-run (issue 23)."""

import os
import signal

import pytest
import torch

from robustlab.attacks.sharded import evaluate_sharded
from robustlab.bounds.certify_many import certify_many
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.shards import Backend, run_shards, shard_bounds, shard_seeds


def test_shards_cover_the_data_once():
    assert shard_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert shard_bounds(10, None) == [(0, 10)]
    assert shard_bounds(3, 8) == [(0, 3)]


def test_one_shard_keeps_the_seed_and_many_get_distinct_repeatable_ones():
    assert shard_seeds(7, 1) == [7]
    seeds = shard_seeds(7, 5)
    assert len(set(seeds)) == 5 and seeds == shard_seeds(7, 5) and seeds != shard_seeds(8, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "spark"}, "unknown backend 'spark'"),
        ({"workers": 0}, "workers must be a positive integer"),
        ({"shard_size": 0}, "shard_size must be a positive integer"),
    ],
)
def test_bad_backends_are_refused_in_one_line(kwargs, match):
    with pytest.raises(RobustlabError, match=match):
        Backend(**kwargs)


def test_local_shards_run_in_order():
    seen = []
    out = run_shards(lambda c, s: c * s, [1, 2, 3], Backend(), shared=(10,),
                     done=lambda k, n: seen.append((k, n)))  # fmt: skip
    assert out == [10, 20, 30] and seen == [(1, 3), (2, 3), (3, 3)]


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as c:  # fmt: skip
        yield c


def _on(cluster, shard_size):
    return Backend("dask", scheduler=cluster.scheduler_address, shard_size=shard_size)


def _without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow
def test_certify_on_dask_is_the_local_result(cluster, mlp, digits):
    data = Dataset(digits.name, digits.x[:120], digits.y[:120], digits.lower, digits.upper)
    local = certify_many(mlp, data, [0.01, 0.03], "inf", "ibp,crown")
    dask = certify_many(mlp, data, [0.01, 0.03], "inf", "ibp,crown", backend=_on(cluster, 32))
    assert dask.certified == local.certified
    assert dask.curve == local.curve and dask.tightness == local.tightness
    assert _without_seconds(dask.per_method) == _without_seconds(local.per_method)


@pytest.mark.slow
def test_attack_on_dask_is_the_local_sharded_result(cluster, mlp, digits):
    data = Dataset(digits.name, digits.x[:96], digits.y[:96], digits.lower, digits.upper)
    kw = dict(attacks=["pgd"], seed=3)  # one attack: no time-based choice of what to bound
    local = evaluate_sharded(mlp, data, [0.05, 0.1], "inf", backend=Backend(shard_size=32), **kw)
    dask = evaluate_sharded(mlp, data, [0.05, 0.1], "inf", backend=_on(cluster, 32), **kw)
    assert dask.n == local.n == 96
    assert dask.robust == local.robust and dask.broken_by == local.broken_by
    assert dask.curve == local.curve and dask.clean_accuracy == local.clean_accuracy
    keep = ("attack", "eps", "n_attacked", "n_broken", "n_outside")
    assert [{k: r[k] for k in keep} for r in dask.per_attack] == [
        {k: r[k] for k in keep} for r in local.per_attack
    ]
    for a, b in zip(dask.x_adv, local.x_adv, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=4 * torch.finfo(a.dtype).eps)
    one = evaluate_sharded(mlp, data, [0.05, 0.1], "inf", **kw)  # one shard: evaluate's own run
    assert one.n == 96 and len(one.robust[0]) == 96


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(cluster, mlp, digits):
    distributed = pytest.importorskip("distributed")
    data = Dataset(digits.name, digits.x[:240], digits.y[:240], digits.lower, digits.upper)
    killed = []

    def kill_one(message: str) -> None:
        if message.startswith("shard ") and not killed:
            with distributed.Client(cluster.scheduler_address) as client:
                victim = sorted(client.scheduler_info()["workers"])[0]
                pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; its tasks run again
            killed.append(victim)

    local = certify_many(mlp, data, [0.02], "inf", "crown")
    dask = certify_many(mlp, data, [0.02], "inf", "crown", backend=_on(cluster, 8),
                        progress=kill_one)  # fmt: skip
    assert killed
    assert [r["n"] for r in dask.per_method] == [240]  # nothing lost, nothing counted twice
    assert dask.certified == local.certified and dask.curve == local.curve


@pytest.mark.slow
def test_corruptions_on_dask_are_the_local_result(cluster, mlp, digits):
    from robustlab import zoo
    from robustlab.corruptions.evaluate import evaluate_corruptions

    data = Dataset(digits.name, digits.x[:64], digits.y[:64], digits.lower, digits.upper)
    names, kw = ["gaussian_noise", "shot_noise", "contrast"], dict(seed=5, batch_size=16)
    base = zoo.pretrained("cnn")
    local = evaluate_corruptions(mlp, data, names, "1,3", baseline=base, **kw)
    dask = evaluate_corruptions(mlp, data, names, "1,3", baseline=base, backend=_on(cluster, None),
                                **kw)  # fmt: skip
    skip = ("seconds", "corruption_seconds")
    assert {k: v for k, v in dask.to_dict().items() if k not in skip} == {
        k: v for k, v in local.to_dict().items() if k not in skip
    }


@pytest.mark.slow
def test_smoothing_on_dask_is_the_local_sharded_result(cluster, mlp, digits):
    from robustlab.smoothing.core import smooth

    data = Dataset(digits.name, digits.x[:24], digits.y[:24], digits.lower, digits.upper)
    kw = dict(n0=20, n=200, batch_size=100, seed=2)
    local = smooth(mlp, data, 0.25, backend=Backend(shard_size=10), **kw)
    dask = smooth(mlp, data, 0.25, backend=_on(cluster, 10), **kw)
    assert dask.samples == local.samples and len(dask.samples) == 24
    assert dask.curve == local.curve and dask.clean_accuracy == local.clean_accuracy
    one = smooth(mlp, data, 0.25, **kw)  # one shard: the job's own seed, as before
    assert len(one.samples) == 24


@pytest.mark.slow
def test_explain_on_dask_is_the_one_process_result(cluster, mlp, digits):
    from robustlab.explain import get_explainer
    from robustlab.explain.sharded import explain_sharded

    x = digits.x[:10]
    for method, kw in [("smoothgrad", {"n_samples": 5, "batch_size": 8}),
                       ("sobol", {"grid": 4, "n_designs": 8}),
                       ("integrated-gradients", {"n_steps": 8})]:  # fmt: skip
        explainer = get_explainer(method, **kw)
        whole = explainer(mlp, x)
        dask = explain_sharded(explainer, mlp, x, backend=_on(cluster, 4))
        scale = float(whole.attributions.abs().max())
        torch.testing.assert_close(dask.attributions, whole.attributions, rtol=0,
                                   atol=64 * torch.finfo(torch.float32).eps * scale)  # fmt: skip
        assert (dask.n_forward, dask.n_backward) == (whole.n_forward, whole.n_backward)
        assert torch.equal(dask.classes, whole.classes)
    from robustlab.explain.faithfulness import max_sensitivity

    smoothgrad = get_explainer("smoothgrad", n_samples=4, batch_size=6)
    one = max_sensitivity(mlp, x, smoothgrad, n_samples=2)
    dask = max_sensitivity(mlp, x, smoothgrad, n_samples=2, backend=_on(cluster, 4))
    torch.testing.assert_close(dask, one, rtol=0, atol=64 * torch.finfo(torch.float32).eps)


@pytest.mark.slow
def test_sobol_indices_on_dask_are_the_one_process_result(cluster):
    import numpy as np

    from robustlab.explain import sobol_indices

    def ishigami(u):  # defined here: pickled by value for the workers
        x = -np.pi + 2 * np.pi * u
        return np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])

    one = sobol_indices(ishigami, 3, n=512, seed=4, batch_size=128)
    dask = sobol_indices(ishigami, 3, n=512, seed=4, batch_size=128, backend=_on(cluster, 256))
    assert np.array_equal(dask.total_order, one.total_order)
    assert np.array_equal(dask.first_order, one.first_order)
    assert dask.n_evaluations == one.n_evaluations == 512 * 5


TIMINGS = {"seconds", "elapsed_s", "budget_s", "corruption_seconds", "png", "created", "versions"}


def _same(a, b, path="report"):
    """Equal reports but for timings and pictures; floats within float32 rounding."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a.keys() - TIMINGS:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _same(u, v, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=16 * torch.finfo(torch.float32).eps, abs=1e-12), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_audit_on_dask_is_the_local_result(cluster, mlp, digits):
    from dataclasses import replace

    from robustlab.audit.profiles import get_profile
    from robustlab.jobs.audit import audit_job

    tiny = replace(get_profile("quick"), name="tiny", budget=600.0, n=24, severities="1,3",
                   explain_methods=("saliency", "smoothgrad"), smoothing_examples=8,
                   smoothing_n0=10, smoothing_n=100, n_adversarial=2)  # fmt: skip
    kw = dict(profile=tiny, sigma=0.25, seed=1, n=24)
    local = audit_job(mlp, "digits", [0.05, 0.1], backend=Backend(shard_size=5), **kw)
    dask = audit_job(mlp, "digits", [0.05, 0.1], backend=_on(cluster, 5), **kw)
    ran = ["clean", "attacks", "certified", "corruptions", "smoothing", "sensitivity", "examples"]
    assert [s["name"] for s in local["stages"] if s["status"] == "ok"] == ran
    assert [s["status"] for s in dask["stages"]] == [s["status"] for s in local["stages"]]
    assert dask["settings"].pop("backend")["name"] == "dask"
    assert local["settings"].pop("backend") == {
        "name": "local", "workers": 2, "scheduler": None, "shard_size": 5
    }  # fmt: skip
    dask.pop("reproduce"), local.pop("reproduce")
    _same(local, dask)


def test_a_session_keeps_a_backend_that_needs_no_cluster_of_its_own():
    from robustlab.shards import session

    for backend in (Backend(), Backend(shard_size=4), Backend("dask", scheduler="tcp://h:8786")):
        with session(backend) as running:
            assert running == backend

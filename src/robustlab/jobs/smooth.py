"""The ``robustlab smooth`` job: randomized smoothing of a model over a dataset, as a report."""

from __future__ import annotations

from collections.abc import Callable

from robustlab.jobs.common import prepare, report_head
from robustlab.results import metric_dicts
from robustlab.shards import Backend
from robustlab.smoothing.availability import availability
from robustlab.smoothing.core import smooth

Progress = Callable[[str], None]


def smooth_job(
    model_src,
    data_src,
    sigma: float,
    *,
    n0: int = 100,
    samples: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    n: int | None = None,
    seed: int = 0,
    availability_eps: float | None = None,
    availability_norm: str = "2",
    availability_steps: int = 40,
    device="cpu",
    backend: Backend = Backend(),
    progress: Progress | None = None,
) -> dict:
    """Randomized smoothing of the first ``n`` examples with ``samples`` Monte-Carlo draws per
    input. Keys ``sigma``, ``n`` (examples), ``samples`` (draws), ``alpha``, ``clean_accuracy``
    (of the smoothed classifier, abstentions counted as wrong), ``abstain_rate``, ``curve``
    ({radius, certified_accuracy}) and ``per_input`` ({label, prediction (-1: abstain),
    count_top, radius}); also ``n0`` and ``cost``;
    with ``availability_eps``, ``availability`` (abstention clean and under the availability
    attack, ``robustlab.smoothing.availability``) and ``metrics``."""
    model, data = prepare(model_src, data_src, n, device)

    def on_group(done: int, total: int) -> None:
        if progress:
            progress(f"smoothing: {done}/{total} inputs, {n0 + samples} noise samples each")

    result = smooth(model.module, data, sigma, n0=n0, n=samples, alpha=alpha, batch_size=batch_size,
                    seed=seed, on_group=on_group, backend=backend)  # fmt: skip
    avail = None
    if availability_eps is not None:
        if progress:
            progress(f"availability attack ({availability_norm} eps {availability_eps:g})")
        avail = availability(model.module, data, sigma, availability_eps, availability_norm,
                             steps=availability_steps, clean=result, batch_size=batch_size,
                             seed=seed)  # fmt: skip
    settings = {
        "sigma": sigma,
        "n0": n0,
        "samples": samples,
        "n": n,
        "alpha": alpha,
        "batch_size": batch_size,
        "seed": seed,
        "norm": "2",
    }
    if backend.name != "local" or backend.shard_size:
        settings["shards"] = {"backend": backend.name, "shard_size": backend.shard_size}
    report = report_head("smooth", model, data, settings)
    report["norm"] = "2"
    report.update(result.to_dict())
    metrics = metric_dicts(result.metrics(), keep_missing=True)
    if avail is not None:
        settings["availability_steps"] = availability_steps
        report["availability"] = avail.to_dict()
        metrics += avail.metric_dicts()
    report["metrics"] = metrics
    return report

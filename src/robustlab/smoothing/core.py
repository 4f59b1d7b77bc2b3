"""Randomized smoothing (Cohen et al. 2019, arXiv:1902.02918): PREDICT with abstention, CERTIFY
with an L2 radius, and certified accuracy against radius over a dataset."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.inputs import fit
from robustlab.results import Metric, curve_metrics
from robustlab.shards import Backend, run_shards, shard_bounds, shard_seeds
from robustlab.smoothing.sampling import sample_counts
from robustlab.smoothing.stats import certify_decision, predict_decision

ABSTAIN = -1


def _check(sigma: float, n: int, alpha: float, n0: int = 1, batch_size: int = 1) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise RobustlabError(f"sigma must be a positive number; found {sigma}")
    if n < 1 or n0 < 1:
        raise RobustlabError(f"sample counts n and n0 must be >= 1; found n={n}, n0={n0}")
    if not 0 < alpha < 1:
        raise RobustlabError(f"alpha must lie in (0, 1); found {alpha}")
    if batch_size < 1:
        raise RobustlabError(f"batch size must be >= 1; found {batch_size}")


def _num_classes(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def predict_from_counts(counts: Tensor, alpha: float) -> Tensor:
    """PREDICT's answer per row of class counts: the top class, or ABSTAIN when the two-sided
    binomial test of the top two counts has p-value > alpha."""
    top = counts.topk(min(2, counts.shape[1]), dim=1)
    out = []
    for values, classes in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        second = values[1] if len(values) > 1 else 0
        out.append(classes[0] if predict_decision(values[0], second, alpha) else ABSTAIN)
    return torch.tensor(out, dtype=torch.long)


def certify_from_counts(
    counts0: Tensor, counts: Tensor, n: int, alpha: float, sigma: float
) -> tuple[Tensor, Tensor, Tensor]:
    """CERTIFY's answer per row: the class selected by the n0 selection counts, its count among
    the n estimation samples, and the radius (``nan`` and class ABSTAIN when the lower bound on
    its probability is below 1/2). Returns ``(classes, count_top, radius)``."""
    selected = counts0.argmax(1)
    count_top = counts.gather(1, selected[:, None])[:, 0]
    classes, radii = [], []
    for c, k in zip(selected.tolist(), count_top.tolist(), strict=True):
        ok, r = certify_decision(k, n, alpha, sigma)
        classes.append(c if ok else ABSTAIN)
        radii.append(r)
    return torch.tensor(classes), count_top, torch.tensor(radii, dtype=torch.float64)


def predict(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    *,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The smoothed classifier's prediction for each input (Cohen et al.'s PREDICT), ABSTAIN (-1)
    when the top two counts of ``n`` noise samples are not significantly different."""
    _check(sigma, n, alpha, batch_size=batch_size)
    counts = sample_counts(model, x, sigma, n, _num_classes(model, x), batch_size=batch_size,
                           generator=generator)  # fmt: skip
    return predict_from_counts(counts, alpha)


def certify(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    *,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Cohen et al.'s CERTIFY for each input: ``(classes, radii)``; the class is selected with
    ``n0`` samples, its probability bounded below from ``n`` fresh samples (Clopper-Pearson at
    level 1 - alpha) and the L2 radius is ``sigma * Phi^-1(p_lower)``; ABSTAIN and ``nan``
    where the bound is below 1/2."""
    _check(sigma, n, alpha, n0, batch_size)
    k = _num_classes(model, x)
    counts0 = sample_counts(model, x, sigma, n0, k, batch_size=batch_size, generator=generator)
    counts = sample_counts(model, x, sigma, n, k, batch_size=batch_size, generator=generator)
    classes, _, radii = certify_from_counts(counts0, counts, n, alpha, sigma)
    return classes, radii


@dataclass(frozen=True)
class SmoothingResult:
    """Randomized smoothing over a dataset: the smoothed classifier's accuracy and abstentions,
    certified accuracy against L2 radius, and one record per input."""

    sigma: float
    n0: int
    n: int
    alpha: float
    clean_accuracy: float  # PREDICT correct; abstentions count as wrong
    abstain_rate: float  # PREDICT abstained
    curve: list[dict]  # {radius, certified_accuracy}
    samples: list[dict]  # {label, prediction, count_top, radius}
    seconds: float
    n_forward: int  # noisy inputs through the base classifier
    batch_size: int = 1000
    seed: int = 0
    extra: dict = field(default_factory=dict, repr=False)

    def metrics(self) -> list[Metric]:
        """Clean accuracy (abstentions wrong) and certified accuracy at each L2 radius."""
        return [Metric("clean_accuracy", self.clean_accuracy, True), *curve_metrics(self.curve)]

    def to_dict(self) -> dict:
        return {
            "sigma": self.sigma,
            "n": len(self.samples),  # examples, as everywhere (report schema 2)
            "samples": self.n,  # Monte-Carlo estimation draws per input
            "alpha": self.alpha,
            "clean_accuracy": self.clean_accuracy,
            "abstain_rate": self.abstain_rate,
            "curve": self.curve,
            "per_input": self.samples,
            "n0": self.n0,
            "cost": {
                "seconds": self.seconds,
                "n_forward": self.n_forward,
                "samples_per_second": self.n_forward / self.seconds if self.seconds > 0 else None,
                "batch_size": self.batch_size,
            },
        }


def certified_curve(samples: list[dict], radii: list[float] | None = None, sigma: float = 1.0):
    """Certified accuracy at each radius: the fraction of inputs predicted correctly with a
    certified radius >= r. Default radii: multiples of sigma / 4 up to the largest radius."""
    if radii is None:
        top = max((s["radius"] for s in samples if s["radius"] is not None), default=0.0)
        step = sigma / 4
        radii = [k * step for k in range(int(top / step) + 2)]
    total = max(len(samples), 1)
    return [
        {
            "radius": float(r),
            "certified_accuracy": sum(
                1 for s in samples
                if s["radius"] is not None and s["prediction"] == s["label"] and s["radius"] >= r
            ) / total,
        }
        for r in radii
    ]  # fmt: skip


def smooth(
    model: nn.Module,
    data: Dataset,
    sigma: float,
    *,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int = 0,
    group: int = 16,
    on_group: Callable[[int, int], None] | None = None,
    samples: int | None = None,
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
    backend: Backend = Backend(),
) -> SmoothingResult:
    """PREDICT and CERTIFY every input of ``data`` with shared noise samples.

    Per input, ``n0`` selection samples choose CERTIFY's class and ``n`` estimation samples
    (``samples``: the command line's name, used when given) give
    both CERTIFY's bound and PREDICT's test. A record's ``prediction`` is PREDICT's answer and
    its ``radius`` CERTIFY's, kept only when CERTIFY selected the same class (else ``None``): so
    a point is certified at radius r only if the smoothed classifier predicts it correctly, and
    certified accuracy at radius 0 never exceeds the clean accuracy.

    ``backend``: the inputs in shards (``robustlab.shards``), each with its own seed, in this
    process or on Dask; the records are merged in order (the same numbers for every backend with
    the same shard size).
    """
    n = n if samples is None else samples
    _check(sigma, n, alpha, n0, batch_size)
    if len(data) == 0:
        raise RobustlabError(f"data '{data.name}' is empty")
    model, data = fit(model, data, device=device)  # load_model's, a module or a path
    start = time.perf_counter()
    bounds = shard_bounds(len(data), backend.shard_size)
    if len(bounds) > 1 or backend.name != "local":
        settings = dict(n0=n0, n=n, alpha=alpha, batch_size=batch_size, group=group)
        shards = [
            (Dataset(data.name, data.x[a:b], data.y[a:b], data.lower, data.upper), sigma, s,
             settings)
            for (a, b), s in zip(bounds, shard_seeds(seed, len(bounds)), strict=True)
        ]  # fmt: skip

        def done(k: int, total: int) -> None:  # shards finish in any order: k of them are done
            if on_group:
                on_group(sum(b - a for a, b in bounds[:k]), len(data))

        parts = run_shards(_smooth_shard, shards, backend, shared=(model,), done=done)
        return _result(
            [r for p in parts for r in p.samples], sigma, n0, n, alpha, batch_size, seed, start
        )
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    samples: list[dict] = []
    try:
        k = _num_classes(model, data.x)
        for i in range(0, len(data), group):
            x, y = data.x[i : i + group], data.y[i : i + group]
            counts0 = sample_counts(model, x, sigma, n0, k, batch_size=batch_size, generator=gen)
            counts = sample_counts(model, x, sigma, n, k, batch_size=batch_size, generator=gen)
            pred = predict_from_counts(counts, alpha)
            cls, count_top, radii = certify_from_counts(counts0, counts, n, alpha, sigma)
            for j in range(len(y)):
                certified = int(cls[j]) != ABSTAIN and int(cls[j]) == int(pred[j])
                samples.append({
                    "label": int(y[j]),
                    "prediction": int(pred[j]),
                    "count_top": int(count_top[j]),
                    "radius": float(radii[j]) if certified else None,
                })  # fmt: skip
            if on_group:
                on_group(len(samples), len(data))
    finally:
        model.train(was_training)
    return _result(samples, sigma, n0, n, alpha, batch_size, seed, start)


def _result(samples, sigma, n0, n, alpha, batch_size, seed, start) -> SmoothingResult:
    total = len(samples)
    return SmoothingResult(
        sigma=sigma,
        n0=n0,
        n=n,
        alpha=alpha,
        clean_accuracy=sum(s["prediction"] == s["label"] for s in samples) / total,
        abstain_rate=sum(s["prediction"] == ABSTAIN for s in samples) / total,
        curve=certified_curve(samples, sigma=sigma),
        samples=samples,
        seconds=time.perf_counter() - start,
        n_forward=total * (n0 + n),
        batch_size=batch_size,
        seed=seed,
    )


def _smooth_shard(model, shard) -> SmoothingResult:
    """One shard of ``smooth`` (a Dask task)."""
    data, sigma, seed, settings = shard
    return smooth(model, data, sigma, seed=seed, **settings)

"""``evaluate`` over shards of the data (``robustlab.shards``): each shard an attack-suite run with
its own seed, in this process or on Dask, merged into one ``SuiteResult``.

The merge is exact for what is counted per point (clean, robust, certified, which attack broke a
point and its example) and sums the costs (passes, seconds per attack); a reliability flag raised
on any shard is reported. The result is the same for every backend with the same ``shard_size``
and seed; with one shard it is ``evaluate``'s own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from robustlab.attacks.ensemble import Examples, SuiteResult, _dedupe, evaluate
from robustlab.attacks.skip import SKIP_METHODS
from robustlab.data import Dataset
from robustlab.inputs import ModelLike, fit
from robustlab.results import float32_rate
from robustlab.shards import Backend, run_shards, shard_bounds, shard_seeds

METHOD_ORDER = tuple(SKIP_METHODS)  # the order a shard runs its bound methods in


def evaluate_sharded(
    model: ModelLike,
    data: Dataset,
    eps: Sequence[float],
    norm: str,
    *,
    backend: Backend = Backend(),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    device=None,
    **options,
) -> SuiteResult:
    """``evaluate(model, data, eps, norm, seed=..., **options)`` on each shard of ``backend``
    (``shard_size`` points, seeds from ``shards.shard_seeds``), merged (``merge_suites``)."""
    module, data = fit(model, data, device=device)
    bounds = shard_bounds(len(data), backend.shard_size)
    if len(bounds) == 1 and backend.name == "local":
        return evaluate(module, data, eps, norm, seed=seed, progress=progress, **options)
    seeds = shard_seeds(seed, len(bounds))
    shards = [
        (_part(data, a, b), eps, norm, s, options) for (a, b), s in zip(bounds, seeds, strict=True)
    ]
    start = time.perf_counter()

    def done(k: int, total: int) -> None:
        if progress:
            progress(f"shard {k} of {total} done")

    parts = run_shards(_shard, shards, backend, shared=(module,), done=done)
    return merge_suites(parts, [a for a, _ in bounds], time.perf_counter() - start)


def _part(data: Dataset, a: int, b: int) -> Dataset:
    return Dataset(data.name, data.x[a:b], data.y[a:b], data.lower, data.upper)


def _shard(module, shard) -> SuiteResult:
    """One shard's run (a Dask task: Dask's workers start with one thread per library)."""
    data, eps, norm, seed, options = shard
    return evaluate(module, data, eps, norm, seed=seed, **options)


def merge_suites(
    parts: Sequence[SuiteResult], starts: Sequence[int], seconds: float
) -> SuiteResult:
    """One ``SuiteResult`` from the results of consecutive shards starting at ``starts``."""
    first = parts[0]
    n = sum(p.n for p in parts)
    robust = [sum((p.robust[k] for p in parts), []) for k in range(len(first.eps))]
    skipped = [sum(p.curve[k]["certified_skipped"] for p in parts) for k in range(len(first.eps))]
    curve = [
        {"eps": e, "robust_accuracy": float32_rate(sum(r), n), "certified_skipped": s}
        for e, r, s in zip(first.eps, robust, skipped, strict=True)
    ]
    order = {e: k for k, e in enumerate(sorted(set(first.eps)))}
    rank = {a: k for k, a in enumerate(first.attacks)}
    per_attack = _summed(
        [r for p in parts for r in p.per_attack],
        ("attack", "eps"),
        lambda key: (order[key[1]], rank.get(key[0], len(rank))),
    )
    certification = _summed(
        [r for p in parts for r in p.certification],
        ("method", "eps"),
        lambda key: (order.get(key[1], 0), METHOD_ORDER.index(key[0])),
    )
    examples = _examples(parts, starts)
    return SuiteResult(
        suite=first.suite,
        attacks=first.attacks,
        norm=first.norm,
        eps=first.eps,
        n=n,
        clean_accuracy=float32_rate(sum(round(p.clean_accuracy * p.n) for p in parts), n),
        robust_accuracy=curve[0]["robust_accuracy"],
        curve=curve,
        per_attack=per_attack,
        flags=_dedupe([f for p in parts for f in p.flags]),
        seconds=seconds,
        n_forward=sum(p.n_forward for p in parts),
        n_backward=sum(p.n_backward for p in parts),
        robust=robust,
        certified_skipped=curve[0]["certified_skipped"],
        certification=certification,
        eot=first.eot,
        x_adv=[torch.cat([p.x_adv[k] for p in parts]) for k in range(len(first.eps))],
        broken_by=[sum((p.broken_by[k] for p in parts), []) for k in range(len(first.eps))],
        examples=examples,
    )


def _summed(records: list[dict], key: tuple[str, str], sort) -> list[dict]:
    """Records with the same ``key`` fields merged: counts and seconds summed, notes joined."""
    merged: dict[tuple, dict] = {}
    for r in records:
        k = tuple(r[f] for f in key)
        if k not in merged:
            merged[k] = dict(r)
            continue
        m = merged[k]
        for f, v in r.items():
            if f in key:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                m[f] = m[f] + v
            elif isinstance(v, str) and v and v not in m[f].split("; "):
                m[f] = f"{m[f]}; {v}" if m[f] else v
    return [merged[k] for k in sorted(merged, key=sort)]


def _examples(parts: Sequence[SuiteResult], starts: Sequence[int]) -> list[Examples]:
    found: dict[tuple[str, float], list[tuple]] = {}
    for p, a in zip(parts, starts, strict=True):
        for ex in p.examples:
            found.setdefault((ex.attack, ex.eps), []).append((ex.index + a, ex.x_adv))
    return [
        Examples(name, e, torch.cat([i for i, _ in got]), torch.cat([x for _, x in got]))
        for (name, e), got in found.items()
    ]

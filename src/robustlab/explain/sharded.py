"""An explainer over shards of the inputs (``robustlab.shards``), in this process or on Dask, merged
into the ``ExplainResult`` of one run over all of them.

Every explainer's attribution of an input depends on that input alone: the deterministic ones
(gradients, Integrated Gradients, occlusion, Grad-CAM, FullGrad, extremal perturbations) trivially;
Sobol attribution and OSA-DAS draw one design / one set of views from the seed, the same for every
input and so for every shard; SmoothGrad, Smooth Grad-CAM++ and MoreauGrad draw their noise per
input, and a shard is told where it lies in the whole data (their field ``shard``, see
``base.shard_offset``) so that each input gets the noise of the one-process run. So no shard needs
a seed of its own (``shards.shard_seeds`` would tie the numbers to the shard size): the result is
the one-process run's for every backend and shard size, up to float rounding of other batch shapes.
``map_shards`` does the same for a per-input metric (deletion / insertion AUC, max-sensitivity).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
from torch import Tensor

from robustlab.explain.base import Explainer, ExplainResult, Target
from robustlab.inputs import as_module
from robustlab.shards import Backend, run_shards, shard_bounds


def explain_sharded(
    explainer: Explainer,
    model,
    x: Tensor,
    target: Target = None,
    *,
    backend: Backend = Backend(),
    progress: Callable[[str], None] | None = None,
) -> ExplainResult:
    """``explainer(model, x, target)`` on each shard of ``backend.shard_size`` inputs, the model
    sent once to each Dask worker; attributions, deltas and classes concatenated in input order,
    passes summed, ``seconds`` the wall time. One local shard is ``explainer``'s own call."""
    module = as_module(model)
    bounds = shard_bounds(len(x), backend.shard_size)
    if len(bounds) == 1 and backend.name == "local":
        return explainer(module, x, target)
    shards = [(for_shard(explainer, a, len(x)), x[a:b], _target_part(target, a, b, len(x)))
              for a, b in bounds]  # fmt: skip

    def done(k: int, total: int) -> None:
        if progress:
            progress(f"shard {k} of {total} done")

    start = time.perf_counter()
    parts = run_shards(_explain_shard, shards, backend, shared=(module,), done=done)
    return merge_explanations(parts, time.perf_counter() - start)


def map_shards(
    task: Callable[..., Tensor],
    model,
    x: Tensor,
    rows: tuple = (),
    *,
    backend: Backend = Backend(),
    **options,
) -> Tensor:
    """``task(module, x, *rows, shard=..., **options)`` -> one value per input, on each shard of
    the inputs, concatenated in input order (a per-input metric such as deletion AUC). Each of
    ``rows`` with one row per input (a tensor of ``len(x)`` rows, not one input's shape) is cut
    like ``x``, the others apply as they are; ``shard`` is (the shard's first index, len(x)),
    None for one local run."""
    module = as_module(model)
    n = len(x)
    bounds = shard_bounds(n, backend.shard_size)
    if len(bounds) == 1 and backend.name == "local":
        return task(module, x, *rows, shard=None, **options)

    def cut(v, a: int, b: int):
        per_row = isinstance(v, Tensor) and v.dim() >= 1 and len(v) == n and v.shape != x.shape[1:]
        return v[a:b] if per_row else v

    shards = [(task, x[a:b], tuple(cut(v, a, b) for v in rows), (a, n), options)
              for a, b in bounds]  # fmt: skip
    return torch.cat(run_shards(_map_shard, shards, backend, shared=(module,)))


def _map_shard(module, shard) -> Tensor:
    """One shard of ``map_shards`` (a Dask task)."""
    task, x, rows, where, options = shard
    return task(module, x, *rows, shard=where, **options)


def for_shard(explainer: Explainer, first: int, whole: int) -> Explainer:
    """The explainer told that its inputs start at ``first`` of ``whole`` (when it draws noise per
    input: it has a field ``shard``)."""
    if dataclasses.is_dataclass(explainer) and "shard" in {
        f.name for f in dataclasses.fields(explainer)
    }:
        return dataclasses.replace(explainer, shard=(first, whole))
    return explainer


def _target_part(target: Target, a: int, b: int, n: int) -> Target:
    """A shard's target: labels per input are cut like the inputs; the rest applies as it is."""
    if isinstance(target, Tensor) and target.numel() == n and n > 1:
        return target.reshape(-1)[a:b]
    return target


def _explain_shard(module, shard) -> ExplainResult:
    """One shard's attributions (a Dask task)."""
    explainer, x, target = shard
    return explainer(module, x, target)


def merge_explanations(parts: list[ExplainResult], seconds: float) -> ExplainResult:
    """One ``ExplainResult`` from those of consecutive shards."""

    def cat(field: str) -> Tensor | None:
        values = [getattr(p, field) for p in parts]
        return None if any(v is None for v in values) else torch.cat(values)

    return ExplainResult(
        parts[0].method,
        torch.cat([p.attributions for p in parts]),
        sum(p.n_forward for p in parts),
        sum(p.n_backward for p in parts),
        seconds,
        cat("delta"),
        cat("classes"),
    )

"""The Hessian of the loss in the parameters, layer by layer (HAWQ-V2, Dong et al. 2020,
arXiv:1911.03852; PyHessian, Yao et al. 2020, arXiv:1912.07145): traces by Hutchinson's estimator
with Rademacher vectors, top eigenvalues by power iteration.

The loss is the mean cross-entropy over the data. Hessian-vector products come from double
backpropagation, streamed over batches of ``batch_size`` (exact: the Hessian of the mean is the
size-weighted sum of the batches' Hessians); one batch's gradient graph serves every vector.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor, nn

from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import Layer, layers, parameters_of

# a request: the parameters (indices into the flat list) a vector lives on, and the vector's parts;
# the product is returned on the same parameters (a diagonal block, or the whole Hessian)
Request = tuple[list[int], list[Tensor]]


def batches(data: Dataset, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The data in consecutive batches (at least one example each)."""
    if batch_size < 1:
        raise RobustlabError(f"batch_size must be a positive integer; found {batch_size}")
    if len(data) == 0:
        raise RobustlabError(f"data '{data.name}' is empty")
    for i in range(0, len(data), batch_size):
        yield data.x[i : i + batch_size], data.y[i : i + batch_size]


def hessian_vector_products(
    model: nn.Module, data: Dataset, params: list[Tensor], requests: list[Request], batch_size: int
) -> list[list[Tensor]]:
    """``H v`` of the mean cross-entropy for each request, restricted to the request's parameters."""
    out = [[torch.zeros_like(params[i]) for i in idx] for idx, _ in requests]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for x, y in batches(data, batch_size):
                loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
                grads = torch.autograd.grad(loss, params, create_graph=True)
                for acc, (idx, v) in zip(out, requests, strict=True):
                    dot = sum((grads[i] * vi).sum() for i, vi in zip(idx, v, strict=True))
                    if not dot.requires_grad:  # the loss is linear in these parameters
                        continue
                    hv = torch.autograd.grad(
                        dot, [params[i] for i in idx], retain_graph=True, allow_unused=True
                    )
                    for a, h in zip(acc, hv, strict=True):
                        if h is not None:
                            a.add_(h.detach())
    finally:
        model.train(was_training)
    n = len(data)
    return [[a / n for a in acc] for acc in out]


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of a Hessian block's trace with a 95% confidence interval (Student's
    t over the samples)."""

    name: str
    trace: float
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    samples: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _estimate(name: str, z: Tensor) -> TraceEstimate:
    n = int(z.numel())
    mean = float(z.mean())
    if n < 2:
        return TraceEstimate(name, mean, None, None, None, n)
    se = float(z.std(unbiased=True)) / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return TraceEstimate(name, mean, se, mean - half, mean + half, n)


@dataclass(frozen=True)
class HutchinsonResult:
    """Per-layer Hessian traces and the whole model's (the sum, with its own interval)."""

    layers: list[TraceEstimate]
    total: TraceEstimate
    samples: int
    hvps: int  # Hessian-vector products (one per layer and sample) over the whole data
    seconds: float

    def to_dict(self) -> dict:
        return {
            "layers": [e.to_dict() for e in self.layers],
            "total": self.total.to_dict(),
            "samples": self.samples,
            "hvps": self.hvps,
            "seconds": self.seconds,
        }


def _index(params: list[list[Tensor]]) -> list[list[int]]:
    """For each group, the indices of its tensors in the flat parameter list."""
    out, k = [], 0
    for ps in params:
        out.append(list(range(k, k + len(ps))))
        k += len(ps)
    return out


def hutchinson(
    model: nn.Module,
    data: Dataset,
    *,
    samples: int = 64,
    batch_size: int = 256,
    seed: int = 0,
    chunk: int = 8,
    groups: list[Layer] | None = None,
) -> HutchinsonResult:
    """Hutchinson's estimator of each diagonal block's trace, ``tr(H_ll) = E[v_l . H_ll v_l]``
    with Rademacher ``v_l`` on the layer alone (HAWQ-V2's per-block estimate: no cross-layer
    terms in its variance); the model's trace is the sum of the blocks' samples. ``chunk``
    samples share each batch's gradient graph."""
    if samples < 1 or chunk < 1:
        raise RobustlabError(f"samples and chunk must be positive; found {samples}, {chunk}")
    start = time.perf_counter()
    groups = groups or layers(model)
    params = parameters_of(model, groups)
    flat = [p for ps in params for p in ps]
    index = _index(params)
    gen = torch.Generator().manual_seed(seed)
    z = torch.zeros(samples, len(groups), dtype=torch.float64)
    hvps = 0
    for s0 in range(0, samples, chunk):
        requests, where = [], []
        for k in range(s0, min(samples, s0 + chunk)):
            for g, idx in enumerate(index):
                v = [torch.randint(0, 2, flat[i].shape, generator=gen).to(flat[i].dtype) * 2 - 1
                     for i in idx]  # fmt: skip
                requests.append((idx, v))
                where.append((k, g))
        hvs = hessian_vector_products(model, data, flat, requests, batch_size)
        hvps += len(requests)
        for (k, g), (_, v), hv in zip(where, requests, hvs, strict=True):
            z[k, g] = sum(
                float((a.double() * b.double()).sum()) for a, b in zip(v, hv, strict=True)
            )
    per_layer = [_estimate(g.name, z[:, k]) for k, g in enumerate(groups)]
    return HutchinsonResult(
        per_layer, _estimate("model", z.sum(1)), samples, hvps, time.perf_counter() - start
    )


@dataclass(frozen=True)
class EigenEstimate:
    """The eigenvalue of largest magnitude of a Hessian block (signed), by power iteration."""

    name: str
    eigenvalue: float
    iterations: int
    converged: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _norm(v: list[Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in v))


def top_eigenvalues(
    model: nn.Module,
    data: Dataset,
    *,
    iterations: int = 50,
    tol: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    groups: list[Layer] | None = None,
) -> tuple[list[EigenEstimate], EigenEstimate, int]:
    """Power iteration on every diagonal block ``H_ll`` and on the whole Hessian at once (one
    pass over the data per iteration serves all vectors still moving). A vector stops when its
    Rayleigh quotient changes by at most ``tol`` relatively. Returns the per-layer estimates, the
    whole model's, and the number of passes over the data."""
    if iterations < 1 or not tol > 0:
        raise RobustlabError(f"iterations must be >= 1 and tol > 0; found {iterations}, {tol}")
    groups = groups or layers(model)
    params = parameters_of(model, groups)
    flat = [p for ps in params for p in ps]
    index = [*_index(params), list(range(len(flat)))]
    gen = torch.Generator().manual_seed(seed)
    vecs = []
    for idx in index:
        v = [torch.randn(flat[i].shape, generator=gen).to(flat[i].dtype) for i in idx]
        n = _norm(v)
        vecs.append([t / n for t in v])
    value = [0.0] * len(index)
    done = [False] * len(index)
    steps = [0] * len(index)
    passes = 0
    for _ in range(iterations):
        active = [r for r in range(len(index)) if not done[r]]
        if not active:
            break
        hvs = hessian_vector_products(
            model, data, flat, [(index[r], vecs[r]) for r in active], batch_size
        )
        passes += 1
        for r, hv in zip(active, hvs, strict=True):
            lam = sum(
                float((a.double() * b.double()).sum()) for a, b in zip(vecs[r], hv, strict=True)
            )
            n = _norm(hv)
            steps[r] += 1
            if n == 0.0:
                value[r], done[r] = 0.0, True
                continue
            if steps[r] > 1 and abs(lam - value[r]) <= tol * abs(lam):
                done[r] = True
            value[r] = lam
            vecs[r] = [t / n for t in hv]
    names = [g.name for g in groups] + ["model"]
    out = [EigenEstimate(nm, value[r], steps[r], done[r]) for r, nm in enumerate(names)]
    return out[:-1], out[-1], passes

"""The diagonal of the empirical Fisher information, ``F_ii = mean_n (d log p(y_n | x_n) / d
theta_i)^2`` at the data's labels (the weighting of Fisher-weighted compression, e.g. Hsu et al.
2022, "Language model compression with weighted low-rank factorization", arXiv:2207.00112), from
per-example gradients (``torch.func.vmap`` over ``grad``), streamed over batches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.data import Dataset
from robustlab.sensitivity.hessian import batches
from robustlab.sensitivity.layers import Layer, layers


@dataclass(frozen=True)
class FisherResult:
    """The diagonal per parameter tensor and its sum and mean per layer."""

    diagonal: dict[str, Tensor]  # parameter name -> F_ii, the parameter's shape
    layers: list[dict]  # {name, trace, mean}
    trace: float  # the whole model's sum
    seconds: float

    def to_dict(self) -> dict:
        return {"layers": self.layers, "trace": self.trace, "seconds": self.seconds}


def _per_example_squares(model: nn.Module, names: list[str], x: Tensor, y: Tensor):
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    buffers = {n: b for n, b in model.named_buffers()}

    def loss(p, xi, yi):
        out = torch.func.functional_call(model, (p, buffers), (xi[None],))
        return nn.functional.cross_entropy(out, yi[None])

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return {n: (g**2).sum(0) for n, g in grads.items()}


def _looped_squares(model: nn.Module, names: list[str], x: Tensor, y: Tensor):
    """The same, one example at a time (modules that ``vmap`` cannot batch)."""
    named = dict(model.named_parameters())
    out = {n: torch.zeros_like(named[n]) for n in names}
    for xi, yi in zip(x, y, strict=True):
        loss = nn.functional.cross_entropy(model(xi[None]), yi[None])
        for n, g in zip(names, torch.autograd.grad(loss, [named[n] for n in names]), strict=True):
            out[n] += g.detach() ** 2
    return out


def fisher_diagonal(
    model: nn.Module, data: Dataset, *, batch_size: int = 256, groups: list[Layer] | None = None
) -> FisherResult:
    """The diagonal empirical Fisher of the mean cross-entropy (model in eval mode)."""
    start = time.perf_counter()
    groups = groups or layers(model)
    names = [p for g in groups for p in g.params]
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    was_training = model.training
    model.eval()
    vectorised = True
    try:
        with torch.enable_grad():
            for x, y in batches(data, batch_size):
                if vectorised:
                    try:
                        part = _per_example_squares(model, names, x, y)
                    except RuntimeError:  # an operation without a batching rule
                        vectorised = False
                if not vectorised:
                    part = _looped_squares(model, names, x, y)
                for n in names:
                    total[n] += part[n]
    finally:
        model.train(was_training)
    diag = {n: t / len(data) for n, t in total.items()}
    rows = []
    for g in groups:
        s = sum(float(diag[p].double().sum()) for p in g.params)
        rows.append({"name": g.name, "trace": s, "mean": s / g.size})
    return FisherResult(diag, rows, sum(r["trace"] for r in rows), time.perf_counter() - start)

"""Checks of explanations: deletion and insertion AUC (Petsiuk et al. 2018, arXiv:1806.07421) and
max-sensitivity (Yeh et al. 2019, arXiv:1901.09392). Each metric says which way is better."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.explain.base import (
    Explainer,
    Passes,
    baseline_like,
    blocks,
    check_inputs,
    check_positive,
    explaining,
    resolve_target,
)
from robustlab.explain.sharded import for_shard, map_shards
from robustlab.shards import Backend


@dataclass(frozen=True)
class Metric:
    """What a metric measures and which way is better (as Quantus declares it)."""

    category: str
    higher_is_better: bool


METRICS = {
    "deletion": Metric("faithfulness", higher_is_better=False),
    "insertion": Metric("faithfulness", higher_is_better=True),
    "max-sensitivity": Metric("robustness", higher_is_better=False),
}


def _pixel_order(x: Tensor, attributions: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """Pixels (channels summed) by decreasing attribution: (N, P), and the pixel grid shape."""
    a = attributions.detach().to(x.device, x.dtype)
    pixels = tuple(x.shape[2:]) if x.dim() == 4 else tuple(x.shape[1:])
    if x.dim() == 4 and a.dim() == 3:  # a grid of regions (sobol): nearest upsampling
        a = F.interpolate(a.unsqueeze(1), size=pixels, mode="nearest")
    if x.dim() == 4 and a.dim() == 4:
        a = a.sum(1)
    if a.shape[1:] != pixels or len(a) != len(x):
        raise RobustlabError(
            f"attributions must match the inputs {tuple(x.shape)}; found {tuple(attributions.shape)}"
        )
    return a.flatten(1).argsort(dim=1, descending=True, stable=True), pixels


def _curve(model, x, attributions, target, steps, start, end, batch_size) -> tuple[Tensor, int]:
    """Target-class probability as pixels go from ``start`` to ``end`` images in attribution
    order, ``steps`` + 1 points; returns the area under it per input and the forward passes."""
    check_inputs(x)
    check_positive(batch_size=batch_size)
    if callable(target) and not isinstance(target, Tensor):
        raise RobustlabError(
            "deletion and insertion follow a class probability: give a class or labels"
        )
    order, pixels = _pixel_order(x, attributions)
    n_pix = order.shape[1]
    steps = min(steps or n_pix, n_pix)
    check_positive(steps=steps)
    counts = torch.round(torch.linspace(0, n_pix, steps + 1)).long()
    passes = Passes(model)
    rank = order.argsort(dim=1)  # each pixel's position in the order
    probs = torch.zeros(len(x), steps + 1, dtype=torch.float64)
    with explaining(model):
        _, classes = resolve_target(target, passes, x, batch_size)
        for rows in blocks(len(x) * (steps + 1), batch_size):
            ex, k = rows // (steps + 1), rows % (steps + 1)
            changed = rank[ex] < counts[k, None].to(x.device)  # (B, P)
            changed = changed.view(len(rows), *([1] if x.dim() == 4 else []), *pixels)
            imgs = torch.where(changed, end[ex], start[ex])
            with torch.no_grad():
                p = passes.logits(imgs).softmax(1)
            probs[ex, k] = p.gather(1, classes[ex, None].to(p.device))[:, 0].double().cpu()
    frac = counts.double() / n_pix
    return torch.trapezoid(probs, frac, dim=1), passes.n_forward


def deletion_auc(
    model: nn.Module,
    x: Tensor,
    attributions: Tensor,
    target: int | Tensor | None = None,
    *,
    steps: int | None = 32,
    baseline: float | Tensor = 0.0,
    batch_size: int = 512,
    backend: Backend = Backend(),
) -> Tensor:
    """Area under the target-class probability as the most important pixels are replaced by
    ``baseline`` first (lower is better: a faithful map destroys the evidence fast). ``backend``:
    the inputs in shards (``explain.sharded.map_shards``), the same values."""
    return map_shards(_deletion, model, x.detach(), (attributions, target, baseline),
                      backend=backend, steps=steps, batch_size=batch_size)  # fmt: skip


def _deletion(model, x0, attributions, target, baseline, *, steps, batch_size, shard) -> Tensor:
    return _curve(
        model, x0, attributions, target, steps, x0, baseline_like(baseline, x0), batch_size
    )[0]


def insertion_auc(
    model: nn.Module,
    x: Tensor,
    attributions: Tensor,
    target: int | Tensor | None = None,
    *,
    steps: int | None = 32,
    baseline: float | Tensor = 0.0,
    batch_size: int = 512,
    backend: Backend = Backend(),
) -> Tensor:
    """Area under the target-class probability as the most important pixels are put back into
    ``baseline`` first (higher is better). ``backend``: as for ``deletion_auc``."""
    return map_shards(_insertion, model, x.detach(), (attributions, target, baseline),
                      backend=backend, steps=steps, batch_size=batch_size)  # fmt: skip


def _insertion(model, x0, attributions, target, baseline, *, steps, batch_size, shard) -> Tensor:
    return _curve(
        model, x0, attributions, target, steps, baseline_like(baseline, x0), x0, batch_size
    )[0]


def max_sensitivity(
    model: nn.Module,
    x: Tensor,
    explainer: Explainer,
    target: int | Tensor | None = None,
    *,
    radius: float = 0.02,
    n_samples: int = 10,
    seed: int = 0,
    backend: Backend = Backend(),
) -> Tensor:
    """max over uniform perturbations |d|_inf <= radius of ||phi(x + d) - phi(x)|| / ||phi(x)||
    (Frobenius norms), explaining the same class as at ``x`` (lower is better). ``backend``: the
    inputs in shards (``explain.sharded.map_shards``), each drawing the whole run's noise."""
    check_inputs(x)
    check_positive(n_samples=n_samples)
    if not radius >= 0:
        raise RobustlabError(f"radius must be >= 0; found {radius!r}")
    return map_shards(_max_sensitivity, model, x.detach(), (explainer, target), backend=backend,
                      radius=radius, n_samples=n_samples, seed=seed)  # fmt: skip


def _max_sensitivity(model, x0, explainer, target, *, radius, n_samples, seed, shard) -> Tensor:
    first, whole = shard or (0, len(x0))
    if shard is not None:
        explainer = for_shard(explainer, first, whole)
    ref = explainer(model, x0, target)
    classes = ref.classes if ref.classes is not None else target
    base = ref.attributions.flatten(1).double()
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    worst = torch.zeros(len(x0), dtype=torch.float64, device=x0.device)
    for _ in range(n_samples):
        shape = (whole, *x0.shape[1:])  # the whole run's draw; a shard takes its rows
        noise = torch.rand(shape, generator=gen, dtype=x0.dtype, device=x0.device)
        noise = 2 * noise[first : first + len(x0)] - 1
        got = explainer(model, x0 + radius * noise, classes).attributions.flatten(1).double()
        rel = (got - base).norm(dim=1) / base.norm(dim=1).clamp_min(1e-12)
        worst = torch.maximum(worst, rel)
    return worst

"""Falsification: random sampling and PGD on a property's violation objective, and the
re-check of every counterexample by a plain forward pass of the ONNX model in onnxruntime."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.verify.spec import Property


def float32_box(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """The largest float32 box inside ``[lower, upper]`` (bounds rounded inwards)."""
    lo, hi = lower.float(), upper.float()
    lo = torch.where(lo.double() < lower, torch.nextafter(lo, torch.full_like(lo, torch.inf)), lo)
    hi = torch.where(hi.double() > upper, torch.nextafter(hi, torch.full_like(hi, -torch.inf)), hi)
    return lo, hi


def _violation(model: nn.Module, prop: Property, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    with torch.no_grad():
        return prop.violation(model(x.reshape(-1, *shape)).reshape(len(x), -1))


def search(
    model: nn.Module,
    prop: Property,
    shape: tuple[int, ...],
    *,
    samples: int = 2048,
    steps: int = 50,
    restarts: int = 4,
    seed: int = 0,
) -> Tensor | None:
    """A float32 input (flat) in the box whose output reaches the unsafe region, or None."""
    lo, hi = float32_box(prop.lower, prop.upper)
    gen = torch.Generator().manual_seed(seed)
    x = lo + torch.rand(samples, lo.numel(), generator=gen) * (hi - lo)
    x = torch.cat([x, ((lo + hi) / 2)[None], lo[None], hi[None]])
    v = _violation(model, prop, x, shape)
    if (v <= 0).any():
        return x[v.argmin()]
    x_adv = descend(model, prop, shape, x[v.argsort()[:restarts]], lo, hi, steps)
    v = _violation(model, prop, x_adv, shape)
    return x_adv[v.argmin()] if (v <= 0).any() else None


def descend(
    model, prop: Property, shape, start: Tensor, lo: Tensor, hi: Tensor, steps: int
) -> Tensor:
    """Projected sign-gradient descent on the violation from ``start`` (Linf PGD over the box);
    returns, per start, the iterate with the smallest violation."""
    step = 2.5 * (hi - lo) / 2 / max(steps, 1)
    xa, best = start.clone(), start.clone()
    best_v = torch.full((len(start),), torch.inf, dtype=torch.float64)
    for k in range(steps + 1):  # the last pass only scores the final iterate
        xa = xa.detach().requires_grad_(k < steps)
        with torch.enable_grad():
            v = prop.violation(model(xa.reshape(-1, *shape)).reshape(len(xa), -1))
        with torch.no_grad():
            better = v < best_v
            best[better], best_v[better] = xa[better].detach(), v[better].detach()
        if k == steps:
            break
        (g,) = torch.autograd.grad(v.sum(), xa)
        with torch.no_grad():
            xa = torch.minimum(torch.maximum(xa - step * g.sign(), lo), hi)
    return best


def check_onnx(
    onnx_bytes: bytes, prop: Property, x: Tensor, input_shape: list[int]
) -> np.ndarray | None:
    """Run the ONNX model on ``x`` (float32) with onnxruntime; return its output when ``x`` lies in
    the property's box and the output reaches the unsafe region, else None."""
    import onnxruntime as ort

    x32 = x.detach().float().reshape(-1)
    inside = (x32.double() >= prop.lower).all() and (x32.double() <= prop.upper).all()
    if not inside:
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    y = sess.run(None, {name: x32.numpy().reshape(input_shape)})[0].reshape(-1)
    v = prop.violation(torch.from_numpy(y.astype(np.float64))[None])
    return y if v.item() <= 0 else None

"""Tolerances for comparing two float computations of one quantity (other batch shapes, blocking or
thread counts), derived from the dtype and the magnitudes involved, so that a test means the same on
every machine.

The standard bound (Higham 2002, Accuracy and Stability of Numerical Algorithms, section 3.1): a sum
or dot product of n terms computed in any order has an error of at most gamma_n * sum |terms|, with
gamma_n = n u / (1 - n u) and u the unit roundoff; two such computations differ by at most twice that.
For a network of affine layers (Linear, Conv2d) and ReLUs the sum of absolute terms behind an output
is bounded by the same network with |W| and |b| evaluated on |x| (every ReLU then passes its input),
and behind a gradient by that network's gradient; n is the sum of the fan-ins along the depth.
These tolerances are for comparing two computations only, never for deciding soundness.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

AFFINE = (nn.Linear, nn.Conv2d)
PASSIVE = (nn.ReLU, nn.Flatten, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.Sequential)


def gamma(n: int, dtype: torch.dtype = torch.float32) -> float:
    """gamma_n = n u / (1 - n u) for the unit roundoff u of ``dtype``."""
    nu = n * torch.finfo(dtype).eps / 2
    assert nu < 0.5, f"{n} terms are too many for {dtype}"
    return nu / (1 - nu)


def rounding_atol(magnitude, n_terms: int, dtype: torch.dtype = torch.float32):
    """How far two computations of sums of ``n_terms`` terms whose absolute values add up to
    ``magnitude`` (a number or a tensor broadcast against the values) can differ."""
    return 2 * gamma(n_terms, dtype) * magnitude


def assert_close_rounding(
    actual: Tensor, expected: Tensor, magnitude, n_terms: int, dtype: torch.dtype | None = None
) -> None:
    """``actual`` and ``expected`` differ by no more than rounding allows (``rounding_atol``)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    dtype = dtype or actual.dtype
    diff = (actual.double() - expected.double()).abs()
    tol = torch.as_tensor(rounding_atol(magnitude, n_terms, dtype), dtype=torch.float64)
    tol = tol.expand_as(diff) if tol.dim() else tol
    worst = (diff - tol).flatten().argmax()
    assert (diff <= tol).all(), (
        f"|difference| {diff.flatten()[worst]:.3g} exceeds the rounding bound "
        f"{tol.flatten()[worst] if tol.dim() else tol:.3g} ({n_terms} terms, {dtype})"
    )


def network_terms(model: nn.Module, x: Tensor) -> int:
    """The sum of the fan-ins of every affine layer call (+1 for its bias) along the forward pass."""
    counts: list[int] = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            counts.append(module.in_features + 1)
        else:
            kh, kw = module.kernel_size
            counts.append(module.in_channels // module.groups * kh * kw + 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, AFFINE)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return sum(counts)


def _abs_network(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if not list(m.children()) and not isinstance(m, AFFINE + PASSIVE):
            raise TypeError(f"no absolute-value bound for {type(m).__name__}")
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    return net


def network_magnitude(model: nn.Module, x: Tensor, k: int | Tensor) -> Tensor:
    """Per input (N,): a bound on the sum of absolute terms behind logit ``k`` (an int or one per
    input) and behind every entry of its gradient with respect to the input."""
    net = _abs_network(model)
    k = torch.as_tensor(k).expand(len(x))
    rows = torch.arange(len(x))
    with torch.no_grad():
        forward = net(x.abs())[rows, k]
    with torch.enable_grad():
        xs = (x.abs() + 1).requires_grad_()  # every ReLU of the absolute network active
        (grad,) = torch.autograd.grad(net(xs)[rows, k].sum(), xs)
    return torch.maximum(forward, grad.flatten(1).amax(1)).detach()

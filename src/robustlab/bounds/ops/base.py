"""The bound-rule protocol: every operation knows its forward pass, its interval rule, and either its
exact transpose (linear operations) or a linear relaxation (nonlinear ones)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Bounds:
    """Elementwise ``lower <= f <= upper``; tensors of the same shape."""

    lower: Tensor
    upper: Tensor

    def intersect(self, other: Bounds) -> Bounds:
        return Bounds(
            torch.maximum(self.lower, other.lower), torch.minimum(self.upper, other.upper)
        )

    def shifted(self, bias: Tensor) -> Bounds:
        return Bounds(self.lower + bias, self.upper + bias)

    @property
    def shape(self) -> torch.Size:
        return self.lower.shape


@dataclass(frozen=True)
class InputRegion(Bounds):
    """The input box, and when the region is an L2 ball its centre and radius (CROWN then also
    uses the dual norm: ``a . x >= a . x0 - eps ||a||_2``, and keeps the better bound)."""

    center: Tensor | None = None
    l2_eps: float | None = None


class Op:
    """A graph operation with ``n_inputs`` input-dependent operands."""

    n_inputs: int = 1
    tracked: bool = True  # covered by the float32 rounding bookkeeping (tracker.py)

    def forward(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def ibp(self, *bs: Bounds) -> Bounds:
        raise NotImplementedError


class LinearOp(Op):
    """An affine operation ``y = L(x_1, ..., x_k) + b``.

    ``backward(A)`` takes coefficients ``A`` of shape (batch, rows, *out_shape) and returns the
    coefficients on each input (same leading dims) and the bias term ``A . b`` of shape (batch, rows).
    """

    def backward(self, A: Tensor, in_shapes: list[tuple[int, ...]]) -> tuple[list[Tensor], Tensor]:
        raise NotImplementedError

    def ibp(self, *bs: Bounds) -> Bounds:
        mids = [(b.upper + b.lower) / 2 for b in bs]
        rads = [(b.upper - b.lower) / 2 for b in bs]
        c = self.forward(*mids)
        r = self.forward_abs(*rads)
        return Bounds(c - r, c + r)

    def forward_abs(self, *rads: Tensor) -> Tensor:
        """``|L| r``: the linear part with absolute coefficients, no bias."""
        raise NotImplementedError


class Activation(Op):
    """An elementwise nonlinearity with linear lower and upper relaxations on ``[l, u]``."""

    has_alpha: bool = False  # whether the lower slope of unstable neurons can be optimised
    zero_lower_intercept: bool = False  # whether ``relax`` always returns lb == 0

    def ibp(self, b: Bounds) -> Bounds:  # monotone nondecreasing by default
        return Bounds(self.forward(b.lower), self.forward(b.upper))

    def relax(
        self, l: Tensor, u: Tensor, alpha: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Slopes and intercepts ``(la, lb, ua, ub)`` with ``la x + lb <= f(x) <= ua x + ub``."""
        raise NotImplementedError

    def alpha_init(self, l: Tensor, u: Tensor) -> Tensor:
        """Initial optimisable lower slopes (CROWN's adaptive choice)."""
        raise NotImplementedError

    def alpha_start(self, b: Bounds) -> Tensor | None:
        """alpha-CROWN's initial parameters for input bounds ``b`` (batch, ...), or None when no
        neuron has a choice (here: ReLU-like, unstable neurons)."""
        if not bool(((b.lower < 0) & (b.upper > 0)).any()):
            return None
        return self.alpha_init(b.lower, b.upper)

    def clamp_alpha_(self, a: Tensor) -> None:
        """Project the parameters back to their valid range (in place)."""
        a.clamp_(getattr(self, "slope", 0.0), 1.0)


def vjp_backward(fn, A: Tensor, in_shape: tuple[int, ...]) -> Tensor:
    """The transpose of a linear map ``fn`` (no bias) applied to rows of ``A``, by autograd."""
    b, m = A.shape[:2]
    x = torch.zeros((b * m, *in_shape), dtype=A.dtype, device=A.device, requires_grad=True)
    with torch.enable_grad():
        y = fn(x)
        (g,) = torch.autograd.grad(
            y, x, grad_outputs=A.reshape(b * m, *A.shape[2:]), create_graph=A.requires_grad
        )
    return g.reshape(b, m, *in_shape)

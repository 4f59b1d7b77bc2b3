"""Specifications: input boxes, each with an unsafe output region in disjunctive normal form.

A property is *violated* when some input in a box yields an output ``y`` with ``C y <= d`` for
every row of some disjunct; it *holds* when no such input exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Disjunct:
    """One conjunction of linear output constraints ``C y <= d``."""

    C: Tensor  # (rows, n_outputs), float64
    d: Tensor  # (rows,), float64


@dataclass(frozen=True)
class Property:
    """An input box (flat, as in VNN-LIB's X_i) and the unsafe output region over it."""

    lower: Tensor  # (n_inputs,), float64
    upper: Tensor
    disjuncts: tuple[Disjunct, ...]

    def violation(self, y: Tensor) -> Tensor:
        """Per output ``y`` (batch, n_outputs): the smallest over disjuncts of the largest
        ``(C y - d)`` over rows; ``<= 0`` means the unsafe region is reached."""
        vals = [(y.double() @ dj.C.T - dj.d).amax(1) for dj in self.disjuncts]
        return torch.stack(vals, 1).amin(1)


@dataclass(frozen=True)
class Spec:
    """A disjunction of properties over input boxes (VNN-LIB allows several boxes)."""

    properties: tuple[Property, ...]
    n_inputs: int
    n_outputs: int


def robustness_spec(
    x0: Tensor, label: int, eps: float, num_classes: int, lower: float = 0.0, upper: float = 1.0
) -> Spec:
    """Linf robustness around ``x0``: unsafe when some other class's logit reaches the label's."""
    x = x0.flatten().double()
    lo, hi = (x - eps).clamp(lower, upper), (x + eps).clamp(lower, upper)
    disjuncts = []
    for j in range(num_classes):
        if j == label:
            continue
        C = torch.zeros(1, num_classes, dtype=torch.float64)
        C[0, label], C[0, j] = 1.0, -1.0  # y_label - y_j <= 0
        disjuncts.append(Disjunct(C, torch.zeros(1, dtype=torch.float64)))
    return Spec((Property(lo, hi, tuple(disjuncts)),), x.numel(), num_classes)

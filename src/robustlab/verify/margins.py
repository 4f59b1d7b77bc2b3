"""The margin a ``holds`` must clear, per row and per box: ``HOLD_ULPS`` units of the float32
precision of what rounding can change in the bounded quantity (its outputs' magnitudes and its
sensitivity to the inputs), so that no float32 evaluation of the network contradicts a verdict;
and a property's rows stacked as one matrix. :func:`bab.hold_margin` and
:func:`bab.bounds_and_margins` take these from a bound pass."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.verify.spec import Property

HOLD_ULPS = 16  # the margin of a `holds`, in units of the input precision (see bab.hold_margin)
UNIT = 2.0**-24  # the precision networks are evaluated in (float32, as onnxruntime checks them)


def stack_spec(prop: Property) -> tuple[Tensor, Tensor, list[slice]]:
    rows, rhs, groups, k = [], [], [], 0
    for dj in prop.disjuncts:
        rows.append(dj.C)
        rhs.append(dj.d)
        groups.append(slice(k, k + len(dj.d)))
        k += len(dj.d)
    return torch.cat(rows), torch.cat(rhs), groups


def margin_of(d: Tensor, magnitude: Tensor | float = 0.0, unit: float = UNIT) -> Tensor:
    """``HOLD_ULPS * unit * (|d| + magnitude)``, per row (see :func:`bab.hold_margin`)."""
    return HOLD_ULPS * unit * (d.abs() + magnitude)


def output_rows(C: Tensor) -> tuple[Tensor, Tensor]:
    """``C`` (N, rows, n_outputs) with the identity's rows and their negations for the outputs
    some row reads (``used``) appended: one pass bounds the rows and those outputs' magnitudes
    (TinyYOLO: 5 rows of 42,250, not 42,250^2)."""
    n, _, n_out = C.shape
    used = (C != 0).any(1).any(0).nonzero().squeeze(1)  # the outputs some row reads
    u = len(used)
    eye = C.new_zeros(u, n_out).index_put_((torch.arange(u), used), C.new_ones(()))
    eye = eye.expand(n, u, n_out)
    return torch.cat([C, eye, -eye], 1), used


def box_margins(lb, A, C, d, lo, hi, used, unit: float = UNIT) -> Tensor:
    """The margins of :func:`bab.hold_margin` (N, rows) on each of N boxes from one pass over the
    rows of :func:`output_rows` (``lb``, ``A``: its lower bounds and input coefficients): the
    outputs' magnitudes and the rows' sensitivities to the inputs on the box itself. ``C``:
    (rows, n_outputs) or (N, rows, n_outputs); ``d``: (rows,) or (N, rows)."""
    n, k, u = len(lb), C.shape[-2], len(used)
    lb, A = lb.double(), A.double()  # a float32 pass's bounds are exact in float64
    y_mag = torch.maximum(lb[:, k : k + u].abs(), lb[:, k + u :].abs())
    x_mag = torch.maximum(lo.abs(), hi.abs()).reshape(n, -1).to(A.dtype)
    Cu = C[..., used].abs().to(y_mag.dtype).expand(n, k, u)
    mag = torch.einsum("nko,no->nk", Cu, y_mag)
    mag = mag + torch.einsum("nki,ni->nk", A[:, :k].abs(), x_mag)
    return margin_of(d, mag, unit)

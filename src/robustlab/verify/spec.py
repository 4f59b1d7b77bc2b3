"""Specifications: input boxes (regions), each with an unsafe output region in disjunctive normal
form, stored as flat tensors so that a file with tens of thousands of (box, constraint) pairs is a
handful of arrays, not tens of thousands of Python objects.

A region is *violated* when some input in its box yields an output ``y`` with ``C y <= d`` for
every row of some disjunct; the specification *holds* when no region is violated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass(frozen=True)
class Disjunct:
    """One conjunction of linear output constraints ``C y <= d`` (no rows: always reached)."""

    C: Tensor  # (rows, n_outputs), float64
    d: Tensor  # (rows,), float64


def _segment_violation(vals: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Per sample, the smallest over groups of the largest ``vals`` over each group's rows
    (vals: (batch, rows); group: (rows,) or (batch, rows) in [0, n_groups)); a group without
    rows is reached (-inf)."""
    b = vals.shape[0]
    if n_groups == 0:
        return torch.full((b,), torch.inf, dtype=vals.dtype)
    g = group.expand(b, -1) if group.dim() == 1 else group
    per = torch.full((b, n_groups), -torch.inf, dtype=vals.dtype)
    per = per.scatter_reduce(1, g, vals, "amax", include_self=True)
    return per.amin(1)


@dataclass(frozen=True)
class Property:
    """An input box (flat, as in VNN-LIB's X_i) and the unsafe output region over it."""

    lower: Tensor  # (n_inputs,), float64
    upper: Tensor
    disjuncts: tuple[Disjunct, ...]

    def violation(self, y: Tensor) -> Tensor:
        """Per output ``y`` (batch, n_outputs): the smallest over disjuncts of the largest
        ``(C y - d)`` over rows; ``<= 0`` means the unsafe region is reached."""
        C, d, group = self.stacked
        vals = y.double() @ C.T - d
        return _segment_violation(vals, group, len(self.disjuncts))

    @cached_property
    def stacked(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every row at once: ``C`` (rows, n_outputs), ``d`` (rows,), and each row's disjunct."""
        C = torch.cat([dj.C.double() for dj in self.disjuncts])
        d = torch.cat([dj.d.double() for dj in self.disjuncts])
        group = torch.cat(
            [torch.full((len(dj.d),), k, dtype=torch.long) for k, dj in enumerate(self.disjuncts)]
        )
        return C, d, group


@dataclass(frozen=True)
class Spec:
    """A disjunction over regions; region ``r`` has the box ``lower[r], upper[r]`` and the
    disjuncts ``k`` with ``disjunct_region[k] == r``, whose rows are those ``i`` with
    ``row_disjunct[i] == k`` (both index arrays sorted, so each region's rows are contiguous)."""

    lower: Tensor  # (regions, n_inputs), float64
    upper: Tensor
    C: Tensor  # (rows, n_outputs), float64
    d: Tensor  # (rows,)
    row_disjunct: Tensor  # (rows,), int64
    disjunct_region: Tensor  # (disjuncts,), int64
    n_inputs: int
    n_outputs: int

    def __len__(self) -> int:
        return len(self.lower)

    @staticmethod
    def from_properties(props, n_inputs: int, n_outputs: int) -> Spec:
        Cs, ds, rows, regions, k = [], [], [], [], 0
        for r, p in enumerate(props):
            for dj in p.disjuncts:
                Cs.append(dj.C.double().reshape(-1, n_outputs))
                ds.append(dj.d.double().reshape(-1))
                rows.append(torch.full((len(dj.d),), k, dtype=torch.long))
                regions.append(r)
                k += 1
        empty = torch.zeros(0, n_outputs, dtype=torch.float64)
        return Spec(
            torch.stack([p.lower.double() for p in props]),
            torch.stack([p.upper.double() for p in props]),
            torch.cat(Cs) if Cs else empty,
            torch.cat(ds) if ds else empty[:, 0],
            torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long),
            torch.tensor(regions, dtype=torch.long),
            n_inputs,
            n_outputs,
        )

    @cached_property
    def offsets(self) -> tuple[Tensor, Tensor]:
        """Per region its first disjunct, per disjunct its first row (with a final end entry)."""
        r = torch.searchsorted(self.disjunct_region, torch.arange(len(self) + 1))
        k = torch.searchsorted(self.row_disjunct, torch.arange(len(self.disjunct_region) + 1))
        return r, k

    def property(self, r: int) -> Property:
        """Region ``r`` as a Property (its own disjuncts and rows)."""
        roff, koff = self.offsets
        disjuncts = tuple(
            Disjunct(self.C[koff[k] : koff[k + 1]], self.d[koff[k] : koff[k + 1]])
            for k in range(int(roff[r]), int(roff[r + 1]))
        )
        return Property(self.lower[r], self.upper[r], disjuncts)

    @cached_property
    def properties(self) -> tuple[Property, ...]:
        """Every region as a Property (for small specifications; large ones stay batched)."""
        return tuple(self.property(r) for r in range(len(self)))

    def padded(self, regions: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        """The rows of ``regions`` side by side: ``C`` (n, rows, n_outputs) and ``d`` (n, rows)
        padded with rows that are never reached, each row's disjunct within its region
        (n, rows), and the largest number of disjuncts of a region (padding rows use that
        index, a group of its own)."""
        roff, koff = self.offsets
        k0, k1 = roff[regions], roff[regions + 1]
        r0, r1 = koff[k0], koff[k1]
        n_rows = int((r1 - r0).max()) if len(regions) else 0
        n_dis = int((k1 - k0).max()) if len(regions) else 0
        pos = r0[:, None] + torch.arange(n_rows)[None]
        valid = pos < r1[:, None]
        pos = pos.clamp_max(max(len(self.d) - 1, 0))
        if len(self.d):
            C = torch.where(valid[..., None], self.C[pos], 0.0)
            d = torch.where(valid, self.d[pos], -1.0)  # 0 <= -1: never reached
            group = torch.where(valid, self.row_disjunct[pos] - k0[:, None], n_dis)
        else:
            C = torch.zeros(len(regions), 0, self.n_outputs, dtype=torch.float64)
            d = torch.zeros(len(regions), 0, dtype=torch.float64)
            group = torch.zeros(len(regions), 0, dtype=torch.long)
        return C, d, group, n_dis

    def violation(self, y: Tensor, regions: Tensor) -> Tensor:
        """Per output ``y[i]`` (batch, n_outputs) of region ``regions[i]``: the violation as in
        :meth:`Property.violation` (``<= 0``: the unsafe region is reached)."""
        C, d, group, n_dis = self.padded(regions)
        vals = torch.einsum("bro,bo->br", C, y.double()) - d
        return self.combine(vals, regions, group, n_dis)

    def combine(self, vals: Tensor, regions: Tensor, group: Tensor, n_dis: int) -> Tensor:
        """The violation from the values ``C y - d`` of the padded rows of :meth:`padded` (or
        lower bounds of them: the result is then a lower bound of the violation): the largest
        row of each disjunct, then the smallest disjunct of each region."""
        roff, _ = self.offsets
        count = (roff[regions + 1] - roff[regions])[:, None]
        per = torch.full((len(vals), n_dis + 1), -torch.inf, dtype=torch.float64)
        per = per.scatter_reduce(1, group, vals, "amax", include_self=True)
        # slots beyond a region's own disjuncts (and the padding slot) do not exist
        per = torch.where(torch.arange(n_dis + 1)[None] < count, per, torch.inf)
        return per.amin(1)


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
    return Spec.from_properties([Property(lo, hi, tuple(disjuncts))], x.numel(), num_classes)

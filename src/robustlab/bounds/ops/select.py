"""Maps that only move, drop or pad entries (permutations, transposes, slices, padding): their
transpose is a gather by the inverse index map, exact (no arithmetic) and without autograd's
per-call cost (on VNN-COMP 2023's vit the autograd transposes took a sixth of a verification)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.ops.shape import Monotone, per_sample

EXACT_INDEX = 2**52  # entries numbered exactly in float64


@dataclass(eq=False)
class Select(Monotone):
    """``fn`` sends each output entry to one input entry or to 0, no input entry twice;
    ``inverse[i]``: the output position of input entry i (flat), or the output's size (none)."""

    inverse: Tensor | None = None

    def backward(self, A, in_shapes):
        b, m = A.shape[:2]
        flat = A.reshape(b, m, -1)
        padded = torch.cat([flat, flat.new_zeros(b, m, 1)], 2)
        a_in = padded[..., self.inverse.to(A.device)]
        return [a_in.reshape(b, m, *in_shapes[0])], A.new_zeros(b, m)


def select(fn: Callable[[Tensor], Tensor], example: Tensor, what: str) -> Monotone:
    """``per_sample(fn)`` (its entries moved, dropped or padded, none copied), as a ``Select``
    when probing ``fn`` with numbered entries (twice, numbered in two orders) shows where each
    output entry comes from; else the plain operation (transposed by autograd)."""
    op = per_sample(fn, example, what, terms=0)
    shape = tuple(example.shape[1:])
    n = math.prod(shape)
    if n == 0 or n >= EXACT_INDEX:
        return op
    with torch.no_grad():
        label = torch.arange(1, n + 1, dtype=torch.float64)
        src = fn(label.reshape(1, *shape)).flatten()
        ok = bool(((src == src.round()) & (src >= 0) & (src <= n)).all())
        if not ok:
            return op
        taken = src > 0
        pos = src[taken].long() - 1
        if len(pos.unique()) != len(pos):
            return op
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).double() + 1
        again = fn(order.reshape(1, *shape)).flatten()
        expect = torch.zeros_like(again)
        expect[taken] = order[pos]
        if not torch.equal(again, expect):  # not a selection of entries
            return op
    inverse = torch.full((n,), len(src), dtype=torch.long)
    inverse[pos] = taken.nonzero().squeeze(1)
    return Select(op.fn, terms=0, inverse=inverse)

"""The coefficients of a CROWN backward pass (Zhang et al. 2018, arXiv:1811.00866) as one type:
every form (dense rows here, ``window.Window`` for rows kept on their receptive field) takes the
pass's steps through the same methods, so ``backward.backward`` never asks which form it holds
and a new form is one new subclass.

``raw`` is the form's own object (the tensor of ``Dense``, the ``Window`` itself): what the
float32 bookkeeping (``tracker.py``), the concretizations and the callers read. The steps cost
one small wrapper per result, nothing per entry.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Coef:
    """Linear rows on one node: ``data`` (batch, rows, ...), ``shape`` its shape. A form
    implements every step below (a form that cannot take a step turns dense for it)."""

    __slots__ = ()
    fusable = False  # the last step may be fused with the input's bound (``Tracker.last``)

    @property
    def raw(self):
        return self

    def dense(self) -> Tensor:
        """The same coefficients as a dense (batch, rows, *shape) tensor."""
        raise NotImplementedError

    def as_dense(self) -> Dense:
        return Dense(self.dense())

    def linear(self, op, shapes) -> tuple[list[Coef], Tensor]:
        """Through a linear operation's transpose: the coefficients on each input, the bias."""
        raise NotImplementedError

    def activation(self, la, lb, ua, ub, gap, zero_lower_intercept: bool) -> tuple:
        """Through an elementwise relaxation (lines of shape (batch, 1 or rows, ...)):
        ``(a+ la + a- ua, a- or None, bias or None)``; ``ub=None``: no bias wanted; a dense
        ``a-`` and a None bias leave the bias to the accumulator (``tracker.Exact``)."""
        raise NotImplementedError

    def pool(self, op, l: Tensor, u: Tensor, plain: bool) -> tuple:
        """Through max pooling's relaxation: (the input's coefficients, the bias, the
        coefficients the accumulator reads); ``plain``: the bias is wanted (float64)."""
        raise NotImplementedError

    def add(self, other: Coef) -> Coef:
        """The sum of two coefficient sets on the same node."""
        raise NotImplementedError

    def two_rows(self) -> Coef:
        """Rows ``[C; -C]``."""
        raise NotImplementedError

    def negated(self) -> Coef:
        raise NotImplementedError

    def shared(self) -> bool:
        """Whether every example has the same rows (stride 0 on the batch)."""
        raise NotImplementedError

    def first(self) -> Coef:
        """The first example's rows (batch 1)."""
        raise NotImplementedError

    def expand(self, b: int) -> Coef:
        """Batch-1 rows shared by ``b`` examples (stride 0)."""
        raise NotImplementedError

    def cast(self, dtype: torch.dtype) -> Coef:
        raise NotImplementedError


class Dense(Coef):
    """Dense rows: a (batch, rows, *shape) tensor."""

    __slots__ = ("data", "raw")  # raw: the same tensor (an attribute, not a property call)
    fusable = True

    def __init__(self, data: Tensor) -> None:
        self.data = self.raw = data

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def dense(self) -> Tensor:
        return self.data

    def as_dense(self) -> Dense:
        return self

    def linear(self, op, shapes) -> tuple[list[Coef], Tensor]:
        a = self.data
        if a.shape[0] > 1 and a.stride(0) == 0:  # same rows for every example: one product
            ins, b = op.backward(a[:1], shapes)
            return [Dense(t.expand(a.shape[0], *t.shape[1:])) for t in ins], b.expand(
                a.shape[0], -1
            )
        ins, b = op.backward(a, shapes)
        if len(ins) == 1:
            return [Dense(ins[0])], b
        return [Dense(t) for t in ins], b

    def activation(self, la, lb, ua, ub, gap, zero_lower_intercept: bool) -> tuple:
        # a+ la + a- ua, written to touch the (batch, rows, n) coefficients few times
        a = self.data
        neg = a.clamp(max=0)
        a_in = a * la
        a_in.addcmul_(neg, gap)  # in place: one (batch, rows, n) allocation fewer
        return Dense(a_in), neg, None

    def pool(self, op, l: Tensor, u: Tensor, plain: bool) -> tuple:
        a_in, b = op.backward(self.data, l, u)
        return Dense(a_in), b, self.data

    def add(self, other: Coef) -> Coef:
        return Dense(self.data + other.dense())

    def two_rows(self) -> Coef:
        return Dense(torch.cat([self.data, -self.data], 1))

    def negated(self) -> Coef:
        return Dense(-self.data)

    def shared(self) -> bool:
        return self.data.shape[0] > 1 and self.data.stride(0) == 0

    def first(self) -> Coef:
        return Dense(self.data[:1])

    def expand(self, b: int) -> Coef:
        return Dense(self.data.expand(b, *self.data.shape[1:]))

    def cast(self, dtype: torch.dtype) -> Coef:
        return Dense(self.data.to(dtype))


def wrap(x) -> Coef:
    """A tensor of dense rows as ``Dense``; any ``Coef`` as it is."""
    return x if isinstance(x, Coef) else Dense(x)

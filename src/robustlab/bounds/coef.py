"""The coefficients of a CROWN backward pass (Zhang et al. 2018, arXiv:1811.00866) as one type:
every form (dense rows here, ``window.Window`` for rows kept on their receptive field) takes the
pass's steps, and gives the sums its bias and float32 bookkeeping read (``tracker.py``: products
with vectors, each with its rounding bounded as in ``rounding.py``; the bound over the input
region), through the same methods. So neither ``backward.backward`` nor the accumulators ask
which form they hold, and a new form is one new subclass.

``raw`` is the form's own object (the tensor of ``Dense``, the ``Window`` itself), for the
callers that gave one. The steps cost one small wrapper per result, nothing per entry.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustlab.bounds import rounding
from robustlab.bounds.rounding import SLACK, gamma
from robustlab.bounds.rows import concretize


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
        ``(a+ la + a- ua, what gap_step / shifted_step may reuse or None, bias or None)``;
        ``ub=None``: no bias wanted (a float32 pass keeps its bias in its references)."""
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

    def added_to(self, win) -> Coef:
        """``win + self`` for a ``window.Window`` ``win`` (the second half of ``Window.add``:
        a form that can merge with a window says so here)."""
        return Dense(win.dense() + self.dense())

    # the sums the accumulators read (``tracker.Exact`` / ``tracker.Tracker``): per row, float64;
    # ``v`` is (batch or 1, 1 or rows, *shape) or (batch or 1, *shape) unless said otherwise

    def concretize(self, region) -> Tensor:
        """The rows' lower bound over the input region (a box, or an L2 ball within it)."""
        raise NotImplementedError

    def negative(self) -> Coef:
        """The negative part ``a-`` (same form)."""
        raise NotImplementedError

    def absdot(self, v: Tensor) -> Tensor:
        """An upper bound on ``<|a|, v>`` (v >= 0) with its own rounding bounded."""
        raise NotImplementedError

    def signed_dot(self, v: Tensor, n: int | None = None) -> Tensor:
        """A lower bound on ``<a, v>`` (``v``: (batch, 1 or rows, *shape); ``n`` terms)."""
        raise NotImplementedError

    def dot_below(self, c: Tensor) -> Tensor:
        """A lower bound on ``<a, c>`` for a float64 point ``c`` (batch, *shape): the rows at the
        pass's target reference (``Tracker._at_target``)."""
        raise NotImplementedError

    def gap_step(self, value: Tensor, neg, gap: Tensor, err: Tensor, per_dtype: dict) -> Tensor:
        """``value`` plus a lower bound on ``<a-, gap> - <|a|, err>`` (a relaxation step at the
        reference lines, ``Tracker._vectors``); ``neg``: what ``activation`` returned with the
        step, ``per_dtype`` a cache of the vectors' own forms kept with them."""
        raise NotImplementedError

    def shifted_step(self, value: Tensor, neg, gap: Tensor, shift: Tensor, steps: Tensor):
        """``value`` plus a lower bound on ``<a-, gap> + <a, shift> - <|a|, steps>`` (a
        relaxation step with slopes off the reference lines: alpha-CROWN)."""
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
        if ub is None:
            return Dense(a_in), neg, None
        b = _rowdot(neg, ub)  # <a-, ub> + <a+, lb>
        if not zero_lower_intercept:
            b = b + _rowdot(a - neg, lb)
        return Dense(a_in), neg, b

    def pool(self, op, l: Tensor, u: Tensor, plain: bool) -> tuple:
        a = self.data
        if l.shape[0] != a.shape[0]:  # rows or bounds shared by the batch: both at its size
            n = max(l.shape[0], a.shape[0])
            a = a.expand(n, *a.shape[1:])
            l, u = l.expand(n, *l.shape[1:]), u.expand(n, *u.shape[1:])
        a_in, b = op.backward(a, l, u)
        return Dense(a_in), b, self if a is self.data else Dense(a)

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

    def concretize(self, region) -> Tensor:
        return concretize(self.data, region)

    def negative(self) -> Dense:
        return Dense(self.data.clamp(max=0))

    def absdot(self, v: Tensor) -> Tensor:
        return rounding.absdot(self.data, v)

    def signed_dot(self, v: Tensor, n: int | None = None) -> Tensor:
        return rounding.signed_dot(self.data, v, n)

    def dot_below(self, c: Tensor) -> Tensor:
        # in float64, less its float64 rounding bound (float32 sums would cost
        # gamma_n <|C|, |c|>, the references' magnitudes rather than the bounds' widths)
        C = self.data
        n = math.prod(C.shape[2:])
        return rounding.dense_dot(C, c) - (n + 2) * 2.0**-52 * rounding.absdot(C, c.abs())

    def gap_step(self, value: Tensor, neg, gap: Tensor, err: Tensor, per_dtype: dict) -> Tensor:
        # one pass over each of a- and a: <a-, gap>, <|a-|, |gap|> = -<a-, |gap|> and
        # <|a|, err> = <a, err> - 2 <a-, err>, each in a's precision with its rounding bounded
        # (err's own float32 rounding: within SLACK)
        a = self.data
        neg = a.clamp(max=0) if neg is None else neg
        n = math.prod(a.shape[2:])
        V = per_dtype.get(a.dtype)
        if V is None:
            g, st = gap[:, 0].to(a.dtype), err[:, 0].to(a.dtype)
            V = (rounding.stack_columns([g, g.abs(), st], n), rounding.stack_columns([st], n))
            per_dtype[a.dtype] = V
        dn, da = rounding.dots(neg, V[0]).unbind(-1), rounding.dots(a, V[1])[..., 0]
        gn, gabs, sn = dn
        k = gamma(n + 2)
        value = value + gn - k * (-gabs) * (1 + k)
        return value - (da - 2 * sn) / (1 - 3 * k) * SLACK

    def shifted_step(self, value: Tensor, neg, gap: Tensor, shift: Tensor, steps: Tensor):
        a = self.data
        neg = a.clamp(max=0) if neg is None else neg
        n = math.prod(a.shape[2:])
        value = value + rounding.signed_dot(neg, gap, n)
        value = value + rounding.signed_dot(a, shift, n)
        return value - rounding.absdot_rows(a, steps) * SLACK


def _rowdot(x: Tensor, v: Tensor) -> Tensor:
    """``sum(x * v)`` over the trailing dims: x (batch, rows, *s), v (batch, 1 or rows, *s)."""
    xf, vf = x.flatten(2), v.flatten(2)
    if vf.shape[1] == 1 and xf.shape[1] > 1:
        return torch.bmm(xf, vf.expand(xf.shape[0], -1, -1).transpose(1, 2))[..., 0]
    return (xf * vf).sum(-1)


def wrap(x) -> Coef:
    """A tensor of dense rows as ``Dense``; any ``Coef`` as it is."""
    return x if isinstance(x, Coef) else Dense(x)

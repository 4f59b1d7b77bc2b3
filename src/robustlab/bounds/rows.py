"""Dense coefficient rows for backward passes (CROWN): identity rows on a node's neurons, and the
same rows taken through the node's own dense layer, where that first step is exact (the dense
counterpart of ``window.py``'s identity windows)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds import rounding
from robustlab.bounds.ops.base import Bounds, InputRegion
from robustlab.bounds.ops.linear import Linear


def ragged_rows(shape: tuple[int, ...], neuron: Tensor, like: Tensor) -> Tensor:
    """One identity row per entry of ``neuron`` (flat indices), each its own example: shape
    (len(neuron), 1, *shape) (``intermediate.refine``'s ragged rows)."""
    n = math.prod(shape)
    rows = torch.zeros(len(neuron), n, dtype=like.dtype, device=like.device)
    rows.scatter_(1, neuron[:, None], 1.0)
    return rows.reshape(len(neuron), 1, *shape)


def identity_rows(shape: tuple[int, ...], idx: Tensor, batch: int, like: Tensor) -> Tensor:
    """Rows of the identity for neurons ``idx`` (flat indices): shape (batch, len(idx), *shape)."""
    n = math.prod(shape)
    rows = torch.zeros(len(idx), n, dtype=like.dtype, device=like.device)
    rows[torch.arange(len(idx)), idx] = 1.0
    return rows.reshape(1, len(idx), *shape).expand(batch, -1, *shape)


@dataclass(frozen=True)
class Stepped:
    """Identity rows on neurons of node ``i = W x_j + b`` taken through that step: ``C`` (W's
    rows, (batch, rows, *shape of j)) on node ``j`` and the bias entries ``bias`` (batch or 1,
    rows), so that a bound of ``C . x_j`` plus ``bias`` bounds the neurons."""

    j: int
    C: Tensor
    bias: Tensor

    def add(self, b: Bounds) -> Bounds:
        """Bounds of the neurons from the bounds ``b`` of ``C . x_j``; a float32 pass's rounded
        outward (the sum in float64, one float64 ulp outward, then rounded to float32)."""
        bias = self.bias
        if not rounding.tracked(b.lower):
            return Bounds(b.lower + bias.to(b.lower.dtype), b.upper + bias.to(b.upper.dtype))
        lo = b.lower.double() + bias.double()
        hi = b.upper.double() + bias.double()
        lo = torch.nextafter(lo, lo.new_tensor(-torch.inf))
        hi = torch.nextafter(hi, hi.new_tensor(torch.inf))
        return Bounds(
            rounding.round_down(lo, torch.float32), -rounding.round_down(-hi, torch.float32)
        )


def stepped(graph, i: int, idx: Tensor, batch: int, like: Tensor, stops=None):
    """The identity rows of node i's neurons ``idx`` (flat indices: (rows,) shared by the batch,
    or (batch, rows) per example) through node i's dense layer (:class:`Stepped`), or None where
    node i is not a ``Linear`` of one flat input, ``like``'s dtype would round the weights
    (float64 weights in a float32 pass), or the rows should end at node i's input (``stops``).

    The rows of the identity times W are W's rows exactly, so this is the pass's first step at
    no cost (and, in float32, with no rounding to account for)."""
    node = graph.nodes[i]
    op = node.op
    if not isinstance(op, Linear) or len(node.inputs) != 1 or len(node.shape) != 1:
        return None
    j = node.inputs[0]
    if len(graph.nodes[j].shape) != 1 or (stops is not None and j in stops):
        return None
    w = op.weight
    if w.dtype != like.dtype and like.dtype != torch.float64:
        return None  # the weights would be rounded
    w = w.to(dtype=like.dtype, device=like.device)  # exact; gradients pass (training)
    bias = op.bias
    if bias is None:
        bias = w.new_zeros(w.shape[0])
    bias = bias.to(device=like.device)
    if bias.dtype != torch.float64:
        bias = bias.to(like.dtype)
    if idx.dim() == 1:
        return Stepped(j, w[idx][None].expand(batch, -1, -1), bias[idx][None])
    return Stepped(j, w[idx], bias[idx])


def concretize(A: Tensor, region: Bounds) -> Tensor:
    """Lower bound of ``A . x`` over the input region, shape (batch, rows): ``A c - |A| r`` over
    the box, and for an L2 ball also ``A x0 - eps ||A||_2`` (the larger of the two)."""
    b, m = A.shape[:2]
    Af = A.reshape(b, m, -1)
    c = ((region.upper + region.lower) / 2).reshape(b, -1, 1)
    r = ((region.upper - region.lower) / 2).reshape(b, -1, 1)
    value = (Af @ c - Af.abs() @ r)[..., 0]
    if isinstance(region, InputRegion) and region.l2_eps is not None:
        ball = (Af @ region.center.reshape(b, -1, 1).to(Af.dtype))[
            ..., 0
        ] - region.l2_eps * Af.norm(dim=2)
        value = torch.maximum(value, ball)
    return value


CHUNK = 2**18  # coefficient entries on the input computed at a time by ``last_step``


def last_step(op, a: Tensor, shapes, region: Bounds) -> Tensor:
    """``concretize`` of ``op``'s transpose applied to ``a`` (the step onto the input) plus its
    bias, in chunks of rows small enough to stay in cache: the (batch, rows, *input) coefficients
    are never stored whole. The same numbers as the step followed by ``concretize``."""
    b, m = a.shape[:2]
    if b > 1 and a.stride(0) == 0:  # the same rows for every example: one product
        ins, bias = op.backward(a[:1], shapes)
        return concretize_shared(ins[0], region) + bias
    n = max(math.prod(shapes[0]), 1)
    per = CHUNK // (m * n)
    if per >= b:
        ins, bias = op.backward(a, shapes)
        return concretize(ins[0], region) + bias
    out = a.new_empty(b, m)
    if per >= 1:
        for s in range(0, b, per):
            ins, bias = op.backward(a[s : s + per], shapes)
            out[s : s + per] = concretize(ins[0], slice_region(region, slice(s, s + per))) + bias
        return out
    rows = max(1, CHUNK // n)
    for e in range(b):
        one = slice_region(region, slice(e, e + 1))
        for r in range(0, m, rows):
            ins, bias = op.backward(a[e : e + 1, r : r + rows], shapes)
            out[e : e + 1, r : r + rows] = concretize(ins[0], one) + bias
    return out


def concretize_shared(A: Tensor, region: Bounds) -> Tensor:
    """``concretize`` of rows (1, rows, *input) shared by every example of the region."""
    b = region.lower.shape[0]
    Af = A.reshape(A.shape[1], -1)
    c = ((region.upper + region.lower) / 2).reshape(b, -1)
    r = ((region.upper - region.lower) / 2).reshape(b, -1)
    value = (c @ Af.T - r @ Af.abs().T).to(A.dtype)
    if isinstance(region, InputRegion) and region.l2_eps is not None:
        ball = region.center.reshape(b, -1).to(A.dtype) @ Af.T - region.l2_eps * Af.norm(dim=1)
        value = torch.maximum(value, ball)
    return value


def slice_region(region: Bounds, sel: Tensor) -> Bounds:
    if isinstance(region, InputRegion):
        center = None if region.center is None else region.center[sel]
        return InputRegion(region.lower[sel], region.upper[sel], center, region.l2_eps)
    return Bounds(region.lower[sel], region.upper[sel])

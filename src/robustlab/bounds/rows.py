"""Dense coefficient rows for backward passes (CROWN): identity rows on a node's neurons, and the
same rows taken through the node's own dense layer, where that first step is exact (the dense
counterpart of ``window.py``'s identity windows)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds import rounding
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.linear import Linear


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


def stepped(graph: BoundGraph, i: int, idx: Tensor, batch: int, like: Tensor, stops=None):
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

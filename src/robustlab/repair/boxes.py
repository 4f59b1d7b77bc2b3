"""Repair for the verifier's bounds: a property's box tiled into pieces, and a lower bound of the
violation over each piece by CROWN (Zhang et al. 2018) that training can push up, so that the
repaired property is provable and not only true."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.bounds import rounding
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.verify.spec import Spec


def sub_boxes(lower: Tensor, upper: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The box ``[lower, upper]`` (flat) bisected along its widest side, every piece alike, until
    there are at least ``n`` pieces: (pieces, n_inputs) lower and upper corners."""
    lo, hi = lower[None].clone(), upper[None].clone()
    while len(lo) < n:
        d = int((hi[0] - lo[0]).argmax())
        mid = (lo[:, d] + hi[:, d]) / 2
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[:, d], right_lo[:, d] = mid, mid
        lo, hi = torch.cat([lo, right_lo]), torch.cat([left_hi, hi])
    return lo, hi


def bound_violation(
    model, shape, spec: Spec, regions: Tensor, lo: Tensor, hi: Tensor, intermediate: str = "crown"
) -> Tensor:
    """A lower bound of the violation (as :meth:`Spec.violation`) over each box ``[lo[i],
    hi[i]]`` of region ``regions[i]``, by CROWN (``intermediate="ibp"``: CROWN-IBP, Zhang et
    al. 2020, far looser on ACAS Xu), differentiable with respect to the parameters (no
    rounding accounted for: a training signal, not a proof)."""
    dtype = next(model.parameters()).dtype
    C, d, group, n_dis = spec.padded(regions)
    with rounding.ignored():
        graph = graph_of(model, tuple(shape))
        box = InputRegion(lo.to(dtype).view(-1, *shape), hi.to(dtype).view(-1, *shape))
        final, _ = crown(graph, box, C.to(dtype), intermediate=intermediate, bound_upper=False)
    return spec.combine(final.lower.double() - d, regions, group, n_dis)

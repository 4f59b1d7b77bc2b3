"""Forward linear bound propagation: every node's lower and upper bounds as linear functions of
the input (symbolic intervals, as in ReluVal / Neurify; forward-mode LiRPA in Xu et al. 2020).

Cheap when the input has few dimensions (the cost grows with the input size, not with the number
of neurons to bound), so it serves as intermediate bounds for input-splitting branch and bound."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab import deadline
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.activation import ReLU, SShaped
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.linear import Add, Affine, Linear, Reshape, _cast
from robustlab.errors import UnsupportedOperation


class _Lin:
    """Linear bounds ``Wl x + bl <= h <= Wu x + bu`` with W of shape (N, *shape, n_in)."""

    def __init__(self, wl: Tensor, bl: Tensor, wu: Tensor, bu: Tensor) -> None:
        self.wl, self.bl, self.wu, self.bu = wl, bl, wu, bu

    def concrete(self, c: Tensor, r: Tensor) -> Bounds:
        extra = (1,) * (self.wl.dim() - 2)
        cc, rr = c.view(c.shape[0], *extra, -1), r.view(r.shape[0], *extra, -1)
        lo = (self.wl * cc).sum(-1) - (self.wl.abs() * rr).sum(-1) + self.bl
        hi = (self.wu * cc).sum(-1) + (self.wu.abs() * rr).sum(-1) + self.bu
        return Bounds(lo, hi)


def supported(graph: BoundGraph) -> bool:
    """Whether every operation has a forward rule here."""
    return all(
        isinstance(n.op, (Linear, Affine, Reshape, Add, ReLU, SShaped)) for n in graph.nodes[1:]
    )


def forward_bounds(graph: BoundGraph, region: InputRegion) -> dict[int, Bounds]:
    """Bounds of every node from forward linear bounds, intersected with interval bounds."""
    lo0, hi0 = region.lower, region.upper
    n = lo0.shape[0]
    c = ((hi0 + lo0) / 2).reshape(n, -1)
    r = ((hi0 - lo0) / 2).reshape(n, -1)
    k = c.shape[1]
    eye = torch.eye(k, dtype=lo0.dtype, device=lo0.device).reshape(1, *region.lower.shape[1:], k)
    eye = eye.expand(n, *eye.shape[1:])
    zero = torch.zeros_like(lo0)
    lins = {0: _Lin(eye, zero, eye, zero)}
    bounds: dict[int, Bounds] = {0: region}
    for i, node in enumerate(graph.nodes[1:], 1):
        deadline.check()
        op = node.op
        ins = [lins[j] for j in node.inputs]
        if isinstance(op, Linear):
            w = _cast(op.weight, lo0)
            b = _cast(op.bias, lo0) if op.bias is not None else 0.0
            wp, wn = w.clamp(min=0), w.clamp(max=0)
            h = ins[0]
            lin = _Lin(
                torch.einsum("oi,...ik->...ok", wp, h.wl)
                + torch.einsum("oi,...ik->...ok", wn, h.wu),
                h.bl @ wp.T + h.bu @ wn.T + b,
                torch.einsum("oi,...ik->...ok", wp, h.wu)
                + torch.einsum("oi,...ik->...ok", wn, h.wl),
                h.bu @ wp.T + h.bl @ wn.T + b,
            )
        elif isinstance(op, Affine):
            s, t = op._s(lo0), op._t(lo0)
            h = ins[0]
            sp, sn = s.clamp(min=0), s.clamp(max=0)
            se = sp.unsqueeze(-1) if sp.dim() else sp
            ne = sn.unsqueeze(-1) if sn.dim() else sn
            lin = _Lin(
                se * h.wl + ne * h.wu,
                sp * h.bl + sn * h.bu + t,
                se * h.wu + ne * h.wl,
                sp * h.bu + sn * h.bl + t,
            )
        elif isinstance(op, Reshape):
            h = ins[0]
            lin = _Lin(
                h.wl.reshape(n, *op.shape, k),
                h.bl.reshape(n, *op.shape),
                h.wu.reshape(n, *op.shape, k),
                h.bu.reshape(n, *op.shape),
            )
        elif isinstance(op, Add):
            a, b2 = ins
            if op.sign > 0:
                lin = _Lin(a.wl + b2.wl, a.bl + b2.bl, a.wu + b2.wu, a.bu + b2.bu)
            else:
                lin = _Lin(a.wl - b2.wu, a.bl - b2.bu, a.wu - b2.wl, a.bu - b2.bl)
        elif isinstance(op, (ReLU, SShaped)):
            h = ins[0]
            pre = bounds[node.inputs[0]]
            la, lb, ua, ub = op.relax(pre.lower, pre.upper)
            if (la < 0).any() or (ua < 0).any():  # pragma: no cover - monotone activations only
                raise UnsupportedOperation("forward bounds need nondecreasing activations")
            lin = _Lin(
                la.unsqueeze(-1) * h.wl, la * h.bl + lb, ua.unsqueeze(-1) * h.wu, ua * h.bu + ub
            )
        else:
            raise UnsupportedOperation(f"no forward bound rule for {type(op).__name__}")
        lins[i] = lin
        fb = lin.concrete(c, r)
        ib = op.ibp(*[bounds[j] for j in node.inputs])
        bounds[i] = fb.intersect(ib)
    return bounds

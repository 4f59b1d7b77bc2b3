"""Tightness of interval bounds (Mao et al. 2023, "Understanding Certified Training with Interval
Bound Propagation", arXiv:2306.10426): the radius of the optimal output box over the radius of the
IBP box, for the network linearised at the clean input (its activation pattern fixed there)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import Activation, LinearOp
from robustlab.bounds.ops.bilinear import Bilinear
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.ops.reduce import MaxReduce


def _slope(op: Activation, x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(op.forward(x).sum(), x)
    return g


def tightness(model: nn.Module, x0: Tensor, eps: float) -> Tensor:
    """Per example: sum over outputs of the optimal box radius of the locally linear network
    (``eps * |J|`` row sums, J its Jacobian at x0) divided by the same network's IBP radius."""
    graph = graph_of(model, tuple(x0.shape[1:]))
    x0 = x0.double()
    values = [x0]
    radius = [torch.full_like(x0, float(eps))]
    for node in graph.nodes[1:]:
        ins = [values[j] for j in node.inputs]
        op = node.op
        values.append(op.forward(*ins))
        rs = [radius[j] for j in node.inputs]
        if isinstance(op, LinearOp):
            radius.append(op.forward_abs(*rs))
        elif isinstance(op, Activation):
            radius.append(rs[0] * _slope(op, ins[0]).abs())
        elif isinstance(op, MaxPool):
            radius.append(_select_max(op, rs[0], ins[0]))
        elif isinstance(op, MaxReduce):
            radius.append(_select_reduce(op, rs[0], ins[0]))
        elif isinstance(op, Bilinear) and op.n_inputs == 1:  # a joint relaxation (softmax)
            radius.append(op.radius(ins[0], rs[0]))
        elif isinstance(op, Bilinear):  # the product linearised at the clean input
            x, y = ins
            radius.append(op.forward(x.abs(), rs[1]) + op.forward(rs[0], y.abs()))
    # exact box of the linearised network: eps * ||row of J||_1, with J by autograd through the
    # same graph with activation slopes frozen at x0
    out_dim = values[-1].flatten(1).shape[1]
    jac_rows = []
    for k in range(out_dim):
        x = x0.clone().requires_grad_(True)
        with torch.enable_grad():
            vals = [x]
            for node, _v in zip(graph.nodes[1:], values[1:], strict=True):
                ins = [vals[j] for j in node.inputs]
                op = node.op
                if isinstance(op, Activation):
                    s = _slope(op, values[node.inputs[0]])
                    vals.append(ins[0] * s)
                elif isinstance(op, MaxPool):
                    vals.append(_select_max(op, ins[0], values[node.inputs[0]]))
                elif isinstance(op, MaxReduce):
                    vals.append(_select_reduce(op, ins[0], values[node.inputs[0]]))
                elif isinstance(op, Bilinear) and op.n_inputs == 1:
                    vals.append(op.linearised(values[node.inputs[0]], ins[0]))
                elif isinstance(op, Bilinear):
                    x0_, y0_ = (values[j] for j in node.inputs)
                    vals.append(op.forward(ins[0], y0_) + op.forward(x0_, ins[1]))
                else:
                    vals.append(op.forward(*ins))
            (g,) = torch.autograd.grad(vals[-1].flatten(1)[:, k].sum(), x)
        jac_rows.append(g.flatten(1).abs().sum(1))
    optimal = eps * torch.stack(jac_rows, 1).sum(1)
    ibp = radius[-1].flatten(1).sum(1)
    return (optimal / ibp.clamp_min(1e-30)).detach()


def _select_max(op: MaxPool, x: Tensor, at: Tensor) -> Tensor:
    _, idx = nn.functional.max_pool2d(at, op.kernel, op.stride, op.padding, return_indices=True)
    return x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)


def _select_reduce(op: MaxReduce, x: Tensor, at: Tensor) -> Tensor:
    """``x`` at the entries where ``at`` attains its max (min) over the reduced dims."""
    best, _, _ = op.relax_indices(at, at)
    order = op._order(at.dim() - 1)
    flat = x.permute(order).reshape(x.shape[0], best.shape[1], -1)
    picked = flat.gather(2, best[..., None])[..., 0]
    return picked.reshape(op.forward(at).shape)

"""CROWN: bounds by backward propagation of linear relaxations (Zhang et al. 2018,
arXiv:1811.00866), as generalised to any graph in auto_LiRPA (Xu et al. 2020, arXiv:2002.12920).

Every activation's input gets bounds from its own backward pass (only for neurons that interval
bounds leave unstable); ``intermediate="ibp"`` gives CROWN-IBP (Zhang et al. 2020, arXiv:1906.06316).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ibp import spec_bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Activation, LinearOp
from robustlab.bounds.ops.pool import MaxPool

MAX_ELEMENTS = 2**25  # coefficient entries per backward pass; more rows are split into chunks

Alphas = Mapping[int, Tensor]  # activation node -> lower slopes, shape (batch, rows, *shape)


def concretize(A: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """Lower bound of ``A . x`` over the box: ``A c - |A| r``, shape (batch, rows)."""
    b, m = A.shape[:2]
    Af = A.reshape(b, m, -1)
    c = ((upper + lower) / 2).reshape(b, -1, 1)
    r = ((upper - lower) / 2).reshape(b, -1, 1)
    return (Af @ c - Af.abs() @ r)[..., 0]


def backward(
    graph: BoundGraph,
    bounds: Mapping[int, Bounds],
    target: int,
    C: Tensor,
    alphas: Alphas | None = None,
) -> Tensor:
    """Lower bound of ``C . node[target]`` for each row of ``C`` (shape (batch, rows, *shape)).

    ``bounds`` must hold the input's box (node 0) and the inputs of every activation and
    max-pooling node between the input and ``target``.
    """
    A: dict[int, Tensor] = {target: C}
    bias = C.new_zeros(C.shape[:2])
    for i in range(target, 0, -1):
        a = A.pop(i, None)
        if a is None:
            continue
        node = graph.nodes[i]
        op = node.op
        if isinstance(op, LinearOp):
            ins, b = op.backward(a, [graph.nodes[j].shape for j in node.inputs])
            bias = bias + b
            for j, aj in zip(node.inputs, ins, strict=True):
                A[j] = A[j] + aj if j in A else aj
            continue
        j = node.inputs[0]
        l, u = bounds[j].lower, bounds[j].upper
        if isinstance(op, Activation):
            alpha = alphas.get(i) if alphas else None
            la, lb, ua, ub = op.relax(l[:, None], u[:, None], alpha)
            pos, neg = a.clamp(min=0), a.clamp(max=0)
            a_in = pos * la + neg * ua
            bias = bias + (pos * lb + neg * ub).flatten(2).sum(-1)
        elif isinstance(op, MaxPool):
            a_in, b = op.backward(a, l, u)
            bias = bias + b
        else:  # pragma: no cover - every op is linear, an activation, or max pooling
            raise TypeError(type(op).__name__)
        A[j] = A[j] + a_in if j in A else a_in
    if 0 not in A:  # the target does not depend on the input
        return bias
    return concretize(A[0], bounds[0].lower, bounds[0].upper) + bias


def two_sided(graph, bounds, target, C, alphas=None) -> Bounds:
    """Lower and upper bounds of ``C . node[target]`` in one backward pass (rows ``[C; -C]``)."""
    m = C.shape[1]
    lb = backward(graph, bounds, target, torch.cat([C, -C], 1), alphas)
    return Bounds(lb[:, :m], -lb[:, m:])


def needs_bounds(graph: BoundGraph) -> dict[int, bool]:
    """Nodes whose bounds a relaxation uses -> whether only unstable neurons matter (ReLU)."""
    need: dict[int, bool] = {}
    for node in graph.nodes[1:]:
        if isinstance(node.op, (Activation, MaxPool)):
            j = node.inputs[0]
            need[j] = need.get(j, True) and isinstance(node.op, ReLU)
    return need


def _after_nonlinear(graph: BoundGraph) -> list[bool]:
    """Per node: whether some nonlinear operation lies between the input and it."""
    flag = [False] * len(graph.nodes)
    for i, node in enumerate(graph.nodes[1:], 1):
        flag[i] = any(
            flag[j] or not isinstance(graph.nodes[j].op, LinearOp | type(None)) for j in node.inputs
        )
    return flag


def identity_rows(shape: tuple[int, ...], idx: Tensor, batch: int, like: Tensor) -> Tensor:
    """Rows of the identity for neurons ``idx`` (flat indices): shape (batch, len(idx), *shape)."""
    n = int(torch.tensor(shape).prod()) if shape else 1
    rows = torch.zeros(len(idx), n, dtype=like.dtype, device=like.device)
    rows[torch.arange(len(idx)), idx] = 1.0
    return rows.reshape(1, len(idx), *shape).expand(batch, -1, *shape)


def refine(graph, bounds, i: int, unstable_only: bool, alphas=None) -> Bounds:
    """Tighten the bounds of node ``i`` with backward passes (in chunks of rows)."""
    b = bounds[i]
    batch = b.lower.shape[0]
    mask = ((b.lower < 0) & (b.upper > 0)) if unstable_only else (b.lower < b.upper)
    idx = mask.reshape(batch, -1).any(0).nonzero().squeeze(1)
    if len(idx) == 0:
        return b
    in_numel = max(int(torch.tensor(n.shape).prod()) for n in graph.nodes[: i + 1])
    chunk = max(1, MAX_ELEMENTS // (2 * batch * in_numel))
    lo = b.lower.reshape(batch, -1).clone()
    hi = b.upper.reshape(batch, -1).clone()
    for s in range(0, len(idx), chunk):
        part = idx[s : s + chunk]
        C = identity_rows(graph.nodes[i].shape, part, batch, b.lower)
        nb = two_sided(graph, bounds, i, C, alphas)
        lo[:, part] = torch.maximum(lo[:, part], nb.lower)
        hi[:, part] = torch.minimum(hi[:, part], nb.upper)
    return Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))


def intermediate_bounds(
    graph: BoundGraph,
    lower: Tensor,
    upper: Tensor,
    method: str = "crown",
    prior: Mapping[int, Bounds] | None = None,
) -> dict[int, Bounds]:
    """Bounds of every node: interval bounds, tightened by CROWN where a relaxation uses them."""
    need = needs_bounds(graph) if method == "crown" else {}
    nonlinear_before = _after_nonlinear(graph)
    bounds: dict[int, Bounds] = {0: Bounds(lower, upper)}
    for i, node in enumerate(graph.nodes[1:], 1):
        b = node.op.ibp(*[bounds[j] for j in node.inputs])
        if prior and i in prior:
            b = b.intersect(prior[i])
        bounds[i] = b
        if i in need and nonlinear_before[i] and i != graph.output:
            bounds[i] = refine(graph, bounds, i, need[i])
    return bounds


def crown(
    graph: BoundGraph,
    lower: Tensor,
    upper: Tensor,
    C: Tensor | None = None,
    *,
    intermediate: str = "crown",
    bound_upper: bool = True,
) -> tuple[Bounds, dict[int, Bounds]]:
    """CROWN (``intermediate="crown"``) or CROWN-IBP (``"ibp"``) bounds of ``C @ output``."""
    bounds = intermediate_bounds(graph, lower, upper, intermediate)
    out = graph.output
    if C is None:
        shape = graph.nodes[out].shape
        n = int(torch.tensor(shape).prod())
        C = identity_rows(shape, torch.arange(n), lower.shape[0], lower)
    C = C.to(lower.dtype)
    if bound_upper:
        final = two_sided(graph, bounds, out, C)
    else:  # lower bounds only (e.g. for certification), half the work
        lb = backward(graph, bounds, out, C)
        final = Bounds(lb, torch.full_like(lb, torch.inf))
    final = final.intersect(spec_bounds(graph, bounds, C))
    return final, bounds

"""The CROWN backward pass (Zhang et al. 2018, arXiv:1811.00866), as generalised to any graph in
auto_LiRPA (Xu et al. 2020, arXiv:2002.12920): the lower bound of linear rows of a node,
by propagating them back to the input through every operation's linear relaxation.

Which rows a pass gets, for intermediate bounds, is ``intermediate.py``'s; the method that chains
them is ``crown.py``'s.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from robustlab import deadline
from robustlab.bounds import rounding
from robustlab.bounds.coef import Coef, Dense, wrap
from robustlab.bounds.forward import Lin, substitute
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.plan import ACTIVATION, BILINEAR, LINEAR, POOL
from robustlab.bounds.tracker import Exact, Tracker, covers

MAX_ELEMENTS = 2**25  # coefficient entries per backward pass; more rows are split into chunks

Alphas = Mapping[int, Tensor]  # activation node -> lower slopes, shape (batch, rows, *shape)


def backward(
    graph: BoundGraph,
    bounds: Mapping[int, Bounds],
    target: int,
    C: Tensor | Coef,
    alphas: Alphas | None = None,
    cache: dict | None = None,
    linear: dict | None = None,
    betas: Mapping[int, Tensor] | None = None,
    record: dict | None = None,
    stops: Mapping[int, Lin] | None = None,
) -> Tensor:
    """Lower bound of ``C . node[target]`` for each row of ``C`` (shape (batch, rows, *shape):
    a tensor, or any ``coef.Coef``, e.g. a ``window.Window``).

        ``bounds`` must hold the input region (node 0) and the inputs of every activation and
        max-pooling node between the input and ``target``. ``cache`` keeps relaxations between calls
        that share the same bounds. When ``linear`` is given, the lower bound's linear function of
        the input is stored there: ``linear["A"]`` (batch, rows, *input_shape) and ``linear["bias"]``.

        ``betas`` adds, for split constraints (beta-CROWN, Wang et al. 2021, arXiv:2103.06624), a
        coefficient tensor to the node it names when the pass reaches it (shape (batch, rows,
        *shape)). ``record`` receives each activation's coefficients on its output (for branching).

        float32 coefficients on a graph with operations outside the rounding bookkeeping
        (``tracker.covers``: products of two tensors, amax, transposed convolutions, ...) are
        computed in float64 and the bound rounded down to float32: as sound, not faster.

        ``stops``: nodes whose linear bounds in the input are known (``forward.forward_bounds``'s
        ``lins``); rows that reach one end there through those bounds (:func:`forward.substitute`)
        instead of going on to the input (float64 passes; float32 ones go on as before).
    """
    C = wrap(C)
    data = C.data
    tracked = rounding.tracked(data)
    if tracked and not covers(graph):
        return _in_float64(graph, bounds, target, C, alphas, linear, betas, record)
    A: dict[int, Coef] = {target: C}
    # the bias: summed (float64), or, in float32, bounded with the pass's rounding (tracker.py)
    acc = Tracker(graph, bounds, C, target, cache) if tracked else Exact(bounds, C)
    plain = acc.bias_terms  # the steps' bias terms are wanted (not a float32 pass)
    stops = stops if plain else None  # float32 passes go on to the input
    plan = graph.plan
    kinds, in_shapes, nodes = plan.kinds, plan.in_shapes, graph.nodes
    for i in range(target, 0, -1):
        deadline.check()  # a pass through a huge network can outlast a verifier's timeout
        a = A.pop(i, None)
        if betas is not None and i in betas:
            acc.start(Dense(betas[i]), i)
            if a is not None:
                a = Dense(a.dense() + betas[i])
                acc.added(a, i)
            else:
                a = Dense(betas[i])
        if a is None:
            continue
        if stops is not None and i in stops and i != target:
            coef, const = substitute(stops[i], a.dense())
            acc.constant(const)
            _accumulate(A, 0, Dense(coef.reshape(*coef.shape[:2], *graph.nodes[0].shape)), acc)
            continue
        node = nodes[i]
        op, kind = node.op, kinds[i]
        if kind == LINEAR:
            shapes = in_shapes[i]
            if (
                node.inputs == (0,)
                and a.fusable
                and not (A or linear is not None)
                and (betas is None or min(betas) >= i)
            ):  # the last step: fused with the input's bound, a chunk of rows at a time
                lb = acc.last(op, a, shapes, node.inputs, node.shape)
                if lb is not None:
                    return lb
            ins, b = a.linear(op, shapes)
            acc.linear(op, a, ins, node.inputs, node.shape, b)
            if len(ins) == 1 and node.inputs[0] not in A:
                A[node.inputs[0]] = ins[0]
            else:
                for j, aj in zip(node.inputs, ins, strict=True):
                    _accumulate(A, j, aj, acc)
            continue
        if kind == BILINEAR:
            alpha = alphas.get(i) if alphas else None
            ins, b = op.backward(a.dense(), *[bounds[j] for j in node.inputs], in_shapes[i], alpha)
            acc.constant(b)
            for j, aj in zip(node.inputs, ins, strict=True):
                _accumulate(A, j, Dense(aj), acc)
            continue
        j = node.inputs[0]
        l, u = bounds[j].lower, bounds[j].upper
        if kind == ACTIVATION:
            if record is not None:
                a = a.as_dense()
                record[i] = a.data
            alpha = alphas.get(i) if alphas else None
            if alpha is None and cache is not None:
                hit = cache.get(i)
                if hit is None or hit[0] is not bounds[j]:
                    lines = rounding.relax(op, l[:, None], u[:, None])
                    hit = (bounds[j], lines, lines[2] - lines[0])
                    cache[i] = hit
                la, lb, ua, ub = hit[1]
                gap = hit[2]
            else:
                la, lb, ua, ub = rounding.relax(op, l[:, None], u[:, None], alpha)
                gap = ua - la
            zli = op.zero_lower_intercept
            a_in, neg, b = a.activation(la, lb, ua, ub if plain else None, gap, zli)
            acc.activation(i, a, la, lb, ua, ub, j, neg, b, zli)
        elif kind == POOL:
            a_in, b, seen = a.pool(op, l, u, plain)
            acc.pool(op, seen, j, i, b)
        else:
            raise TypeError(f"no backward step for {type(op).__name__} at node '{node.name}'")
        _accumulate(A, j, a_in, acc)
    if 0 not in A:  # the target does not depend on the input
        A[0] = Dense(data.new_zeros(*C.shape[:2], *graph.nodes[0].shape))
    return acc.finish(A[0], data.dtype, linear)


def _in_float64(graph, bounds, target, C, alphas, linear, betas, record) -> Tensor:
    """``backward`` in float64, the bound rounded down to C's float32 (``linear``: float64)."""

    def up(t):
        return None if t is None else t.double()

    C64 = C.cast(torch.float64)
    items = bounds.items() if isinstance(bounds, Mapping) else enumerate(bounds)
    b64 = {k: rounding.upcast(b) for k, b in items}
    a64 = None if alphas is None else {k: up(v) for k, v in alphas.items()}
    beta64 = None if betas is None else {k: up(v) for k, v in betas.items()}
    lb = backward(graph, b64, target, C64, a64, None, linear, beta64, record)
    return rounding.round_down(lb, torch.float32)


def _accumulate(A: dict, j: int, a: Coef, acc) -> None:
    """``A[j] += a`` (the sum's rounding is bounded in float32 passes)."""
    if j not in A:
        A[j] = a
        return
    A[j] = total = A[j].add(a)
    acc.added(total, j)


def two_sided(graph, bounds, target, C, alphas=None, cache=None, stops=None) -> Bounds:
    """Lower and upper bounds of ``C . node[target]`` in one backward pass (rows ``[C; -C]``)."""
    C = wrap(C)
    m = C.shape[1]
    if C.shared():  # rows shared by the batch stay shared (the first steps: one product, not b)
        both = C.first().two_rows().expand(C.shape[0])
    else:
        both = C.two_rows()
    lb = backward(graph, bounds, target, both, alphas, cache, stops=stops)
    return Bounds(lb[:, :m], -lb[:, m:])


def two_rows(C):
    """Rows ``[C; -C]`` (a tensor for a tensor, a window for a window)."""
    return wrap(C).two_rows().raw

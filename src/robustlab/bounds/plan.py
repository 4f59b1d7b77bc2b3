"""A compiled plan of a bound graph: what every bound pass asks of the graph, resolved once per
graph (``BoundGraph.plan``) instead of on every call: each node's kind, its inputs' shapes, which
nodes' bounds a relaxation needs, and the sizes that decide how rows are chunked."""

from __future__ import annotations

import math
from dataclasses import dataclass

from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Activation, LinearOp
from robustlab.bounds.ops.bilinear import Bilinear
from robustlab.bounds.ops.linear import Affine, Generic, Reshape
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.ops.reduce import MaxReduce
from robustlab.bounds.ops.shape import Within
from robustlab.bounds.tracker import covers

INPUT, LINEAR, BILINEAR, ACTIVATION, POOL, OTHER = range(6)


@dataclass(frozen=True)
class Plan:
    """Per node (by index): ``kinds`` (INPUT, LINEAR, BILINEAR, ACTIVATION, POOL or OTHER),
    ``in_shapes`` (per-sample shapes of its inputs), ``after_nonlinear`` (whether a nonlinear
    operation lies between the input and it), ``ibp_exact`` (whether interval bounds are exact
    there, see :func:`_ibp_exact`), ``numel_upto`` (the largest per-sample size of the nodes up
    to it); ``needs``: nodes whose bounds a relaxation uses -> whether only unstable neurons
    matter (ReLU)."""

    kinds: tuple[int, ...]
    in_shapes: tuple[tuple[tuple[int, ...], ...], ...]
    after_nonlinear: tuple[bool, ...]
    ibp_exact: tuple[bool, ...]
    numel_upto: tuple[int, ...]
    needs: dict[int, bool]


def _kind(op) -> int:
    if op is None:
        return INPUT
    if isinstance(op, LinearOp):
        return LINEAR
    if isinstance(op, Bilinear):
        return BILINEAR
    if isinstance(op, Activation):
        return ACTIVATION
    if isinstance(op, (MaxPool, MaxReduce)):
        return POOL
    return OTHER  # a backward pass that reaches it fails, naming it


def _entrywise(op) -> bool:
    """Whether each output entry is a monotone function of one input entry, no entry used twice
    (reshapes, permutations, padding, elementwise scale and shift): such a map sends a box to
    a box."""
    if isinstance(op, (Reshape, Affine, Within)):
        return True
    return isinstance(op, Generic) and op.terms == 0


def _ibp_exact(nodes, kinds) -> list[bool]:
    """Per node: whether its interval bounds are its exact range per entry, so no backward pass
    can tighten them. True at the input (a box); entrywise maps keep it (and keep a box a box);
    one linear map of a box is exact per entry (its range is its interval image); a second
    linear map that mixes entries (attention's queries after a patch embedding and a
    normalisation, a Linear after a Linear) is not: there interval bounds lose the correlations
    and CROWN's pass recovers them (VNN-COMP 2023's vit: attention scores 5x narrower)."""
    box, exact = [True] * len(nodes), [True] * len(nodes)
    for i, node in enumerate(nodes[1:], 1):
        j = node.inputs[0] if len(node.inputs) == 1 else None
        if kinds[i] != LINEAR or j is None:
            box[i] = exact[i] = False
        elif _entrywise(node.op):
            box[i], exact[i] = box[j], exact[j]
        else:
            box[i], exact[i] = False, box[j]
    return exact


def compile_plan(graph) -> Plan:
    """The plan of ``graph`` (a ``BoundGraph``); use ``graph.plan``, which caches it."""
    nodes = graph.nodes
    kinds = tuple(_kind(n.op) for n in nodes)
    in_shapes = tuple(tuple(nodes[j].shape for j in n.inputs) for n in nodes)
    after = [False] * len(nodes)
    for i, node in enumerate(nodes[1:], 1):
        after[i] = any(after[j] or kinds[j] not in (INPUT, LINEAR) for j in node.inputs)
    numel, biggest = [], 0
    for n in nodes:
        biggest = max(biggest, math.prod(n.shape))
        numel.append(biggest)
    needs: dict[int, bool] = {}
    for node in nodes[1:]:
        if not isinstance(node.op, LinearOp):
            kink = isinstance(node.op, ReLU) or getattr(node.op, "unstable_only", False)
            for j in node.inputs:
                needs[j] = needs.get(j, True) and kink
    exact = tuple(_ibp_exact(nodes, kinds))
    return Plan(kinds, in_shapes, tuple(after), exact, tuple(numel), needs)


FLOAT32_MIN_ENTRIES = 2**18  # below this, a float32 pass is slower than a float64 one (measured)


def float32_pays(graph, batch: int, *, min_entries: int = FLOAT32_MIN_ENTRIES) -> bool:
    """Whether a rigorous float32 pass can be faster than a float64 one: only when its largest
    coefficient tensor (batch x rows x the widest node) is large enough for the matrix products'
    float32 speed to outweigh the rounding bookkeeping's fixed cost per operation, and only on
    graphs the bookkeeping covers (``tracker.covers``)."""
    plan = graph.plan
    rows = max([2 * math.prod(graph.nodes[j].shape) for j in plan.needs] + [1])
    # a graph outside the float32 bookkeeping is computed in float64 anyway (crown.backward)
    return batch * rows * plan.numel_upto[-1] >= min_entries and covers(graph)

"""A compiled plan of a bound graph: what every bound pass asks of the graph, resolved once per
graph (``BoundGraph.plan``) instead of on every call: each node's kind, its inputs' shapes, which
nodes' bounds a relaxation needs, and the sizes that decide how rows are chunked."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Activation, Bounds, LinearOp
from robustlab.bounds.ops.bilinear import Bilinear
from robustlab.bounds.ops.linear import Affine, Conv, Generic, Linear, Reshape
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.ops.reduce import MaxReduce
from robustlab.bounds.ops.shape import ConvTranspose, Within

INPUT, LINEAR, BILINEAR, ACTIVATION, POOL, OTHER = range(6)


@dataclass(frozen=True)
class Plan:
    """Per node (by index): ``kinds`` (INPUT, LINEAR, BILINEAR, ACTIVATION, POOL or OTHER),
    ``in_shapes`` (per-sample shapes of its inputs), ``after_nonlinear`` (whether a nonlinear
    operation lies between the input and it), ``ibp_exact`` (whether interval bounds are exact
    there, see :func:`_ibp_exact`), ``numel_upto`` (the largest per-sample size of the nodes up
    to it); ``needs``: nodes whose bounds a relaxation uses -> whether only unstable neurons
    matter (ReLU); ``memo``: estimates derived from the graph once (``verify.cost``)."""

    kinds: tuple[int, ...]
    in_shapes: tuple[tuple[tuple[int, ...], ...], ...]
    after_nonlinear: tuple[bool, ...]
    ibp_exact: tuple[bool, ...]
    numel_upto: tuple[int, ...]
    needs: dict[int, bool]
    memo: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)


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


# multiply-adds of a CROWN call's backward passes below which its rigorous float32 pass is slower
# than a float64 one (the rounding bookkeeping's cost per operation and per coefficient is not
# paid back by float32 products). Measured (CPU ms, float64 / float32, one thread): oval21
# cifar_base_kw 1.9e7 MACs 5.6 / 8.3, at eps 8/255 6.9e7: 13.6 / 14.2; ACAS Xu 16 boxes 6.3e7:
# 13.8 / 15.6, 64 boxes 2.5e8: 41.8 / 33.4; MLP 784-4x256 5.2e8: 38.2 / 24.2; residual CNN 1.1e9:
# 90.8 / 36.8
FLOAT32_MIN_MACS = 2**27
# multiply-adds per coefficient entry of a backward pass (``fan_in``) below which float32 does not
# pay at any size: the bookkeeping's elementwise work per entry is not paid back by products that
# short. Measured (ms, float64 / float32, freed memory kept as the benchmark and the verifier
# do: ``heap``): ACAS Xu 64 boxes (fan-in 22) 25.0 / 26.9 CPU at one thread, 18.5 / 21.8 wall
# at two; MLP 784-4x256 (195) 23.0 / 16.4, residual CNN 16x16 (40) 109 / 44 CPU at one thread
FLOAT32_MIN_FAN_IN = 32


def _macs(node) -> int:
    """Multiply-adds of one row through ``node``'s backward step: a dense or convolutional
    layer's products, one per output entry for any other operation."""
    op, n = node.op, math.prod(node.shape)
    if isinstance(op, Linear):
        return n * op.weight.shape[-1]
    if isinstance(op, Conv):
        return n * math.prod(op.weight.shape[1:])
    return n


def float32_macs(graph, batch: int, interval: Mapping[int, Bounds] | None = None) -> int:
    """Multiply-adds of a CROWN call's backward passes, estimated from the plan: per node
    whose bounds a relaxation needs, two rows per neuron that its ``interval`` bounds (node ->
    bounds, e.g. ``dict(enumerate(ibp.interval_all(...)))``) leave unstable (every neuron of a
    node without them: an upper estimate), each through the layers up to the node, plus the
    output's rows."""
    plan, nodes = graph.plan, graph.nodes
    interval = {} if interval is None else interval
    upto, total = [], 0
    for node in nodes:
        total += _macs(node) if node.op is not None else 0
        upto.append(total)
    out = graph.output
    work = 2 * batch * math.prod(nodes[out].shape) * upto[out]
    for i, unstable_only in plan.needs.items():
        if plan.ibp_exact[i] or i == out:
            continue  # no backward pass for it (interval bounds are exact there)
        if i not in interval:
            rows = batch * math.prod(nodes[i].shape)
        else:
            b = interval[i]
            mask = (b.lower < 0) & (b.upper > 0) if unstable_only else b.lower < b.upper
            mask = mask.reshape(batch, -1)
            # ``intermediate.refine``: the union over the batch, or each example's own (padded)
            rows = min(batch * int(mask.any(0).sum()), 2 * int(mask.sum()))
        work += 2 * rows * upto[i]
    return work


def fan_in(graph) -> float:
    """Multiply-adds per coefficient entry of a row's backward pass through the whole graph:
    the layers' products over the entries of every node (wide layers: many; ACAS Xu's 50-neuron
    layers: about 22)."""
    nodes = [n for n in graph.nodes[1 : graph.output + 1] if n.op is not None]
    return sum(_macs(n) for n in nodes) / max(1, sum(math.prod(n.shape) for n in nodes))


def float32_pays(
    graph,
    batch: int,
    interval: Mapping[int, Bounds] | None = None,
    *,
    min_macs: int = FLOAT32_MIN_MACS,
    min_fan_in: float = 0.0,
) -> bool:
    """Whether a rigorous float32 CROWN pass can be faster than a float64 one: only when its
    backward passes hold enough multiply-adds (:func:`float32_macs`, with the unstable neurons
    of ``interval`` when given, else every neuron) for the float32 products to outweigh the
    rounding bookkeeping's cost, and only on graphs the bookkeeping covers
    (``BoundGraph.float32_covered``, once per graph: ``tracker.covers``). What decides is the
    rows, not the shapes alone: oval21's cifar_base_kw has 2,048 rows in the plan but 46 after
    interval bounds at eps 2/255. Nor on narrow layers (:func:`fan_in` under ``min_fan_in``,
    e.g. ``FLOAT32_MIN_FAN_IN``: ACAS Xu), at any size (``compute_bounds``; the verifier's
    callers keep 0: convolutional nets)."""
    if min_fan_in and fan_in(graph) < min_fan_in:
        return False
    # a graph outside the float32 bookkeeping is computed in float64 anyway (backward.backward)
    return float32_macs(graph, batch, interval) >= min_macs and graph.float32_covered


def cone(graph, target: int, C: Tensor) -> dict[int, Tensor]:
    """Per node up to ``target``, the neurons that reach a nonzero column of ``C`` (batch, rows,
    *shape of target), as a flat bool mask over the batch: the only ones whose bounds a backward
    pass of these rows reads. Computed by moving the mask back through each operation with
    absolute weights; an operation without such a step marks all its inputs (only the bound of
    a neuron left out could change, and it keeps its interval bound: sound either way)."""
    nodes, plan = graph.nodes, graph.plan
    reach = {target: (C != 0).reshape(-1, *nodes[target].shape).any(0)}
    g = torch.Generator().manual_seed(0)
    for i in range(target, 0, -1):
        m = reach.get(i)
        if m is None or nodes[i].op is None:
            continue
        if bool(m.all()):  # every neuron: every input (the cone of a dense head, at once)
            ins = [None for _ in nodes[i].inputs]
        else:
            probe = m.to(torch.float32) * (  # only zero or not matters: float32 is enough
                1 + torch.rand(m.shape, generator=g, dtype=torch.float32)
            )
            ins = _reach_back(nodes[i].op, plan.kinds[i], probe[None, None], plan.in_shapes[i])
        for j, r in zip(nodes[i].inputs, ins, strict=True):
            r = torch.ones(nodes[j].shape, dtype=torch.bool) if r is None else r
            reach[j] = r if j not in reach else reach[j] | r
    return {i: m.reshape(-1) for i, m in reach.items()}


def _reach_back(op, kind: int, probe: Tensor, shapes) -> list[Tensor | None]:
    """The inputs that ``probe`` (1, 1, *shape; positive where reached) depends on, per input
    (None: every neuron)."""
    try:
        if kind == LINEAR:
            w = getattr(op, "weight", None)
            if isinstance(w, Tensor) and dataclasses.is_dataclass(op):
                op = dataclasses.replace(op, weight=w.abs())  # no cancellation in the sums
            ins, _ = op.backward(probe, list(shapes))
            return [t[0, 0].reshape(s) != 0 for t, s in zip(ins, shapes, strict=True)]
        if kind == ACTIVATION and all(tuple(s) == tuple(probe.shape[2:]) for s in shapes):
            return [probe[0, 0] != 0 for _ in shapes]
        if isinstance(op, MaxPool):
            c = probe.shape[2]
            ones = torch.ones(c, 1, *op.kernel, dtype=probe.dtype)
            t = nn.functional.conv_transpose2d(
                probe[0], ones, None, op.stride, op.padding, groups=c
            )
            H, W = shapes[0][1:]
            t = nn.functional.pad(t, (0, max(0, W - t.shape[3]), 0, max(0, H - t.shape[2])))
            return [t[0, :, :H, :W] != 0]
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        pass
    return [None for _ in shapes]


def cut_node(graph) -> int | None:
    """Where rows may end for mixed-mode intermediate bounds (``intermediate.intermediate_bounds``'
    ``cut``): the narrowest (then the first) linear node after the first nonlinearity that every later node reaches
    only through it (no skip connection over it), narrower than the node it reads and no wider
    than the next one (a waist: a GAN's generator output before its discriminator), with at
    least two nodes after it whose bounds a relaxation uses (else no row would end there);
    None when there is none (an MLP of equal widths, a CNN that narrows to its output)."""
    nodes, plan = graph.nodes, graph.plan
    lowest = [len(nodes)] * (len(nodes) + 1)  # per index: the lowest input read from there on
    for i in range(len(nodes) - 1, 0, -1):
        lowest[i] = min([lowest[i + 1], *nodes[i].inputs])
    size = [math.prod(n.shape) for n in nodes]
    best = None
    for c in range(1, graph.output):
        if not (plan.kinds[c] == LINEAR and plan.after_nonlinear[c] and lowest[c + 1] >= c):
            continue
        waist = len(nodes[c].inputs) == 1 and size[nodes[c].inputs[0]] > size[c] <= size[c + 1]
        after = sum(1 for j in plan.needs if c < j < graph.output)
        if waist and after >= 2 and (best is None or size[c] < size[best]):
            best = c
    return best


def step_cost(graph, k: int) -> int:
    """Multiply-adds of one dense backward row through node ``k``: a dense layer's weights, a
    convolution's weights at every output position, a transposed convolution's at every input
    position (its transpose is a convolution over its input), else the node's size."""
    node = graph.nodes[k]
    w = getattr(node.op, "weight", None)
    if isinstance(node.op, Conv):
        return w.numel() * math.prod(node.shape[1:])
    if isinstance(node.op, ConvTranspose):
        return w.numel() * math.prod(graph.nodes[node.inputs[0]].shape[1:])
    if isinstance(node.op, Linear):
        return w.numel()
    return math.prod(node.shape)


def row_cost(graph, j: int, stop: int | None = None) -> float:
    """Estimated multiply-adds of one backward row from the central neuron of node ``j`` to the
    input (with ``stop``: to node ``stop``, which it does not cross): per node on the way, the
    neurons of its cone (the row's window) times the inputs each one reads (a convolution's or
    linear layer's fan-in, a transposed convolution's weights per output, else one)."""
    shape = graph.nodes[j].shape
    C = torch.zeros(1, 1, math.prod(shape), dtype=torch.float64)
    C[0, 0, _center(shape)] = 1
    reach = cone(graph, j, C.reshape(1, 1, *shape))
    total = 0.0
    for k, m in reach.items():
        if stop is not None and k <= stop:
            continue
        op = graph.nodes[k].op
        w = getattr(op, "weight", None)
        fan_in = w[0].numel() if isinstance(w, Tensor) and w.dim() > 1 else 1
        if isinstance(op, ConvTranspose):
            fan_in = step_cost(graph, k) / math.prod(graph.nodes[k].shape)
        total += int(m.sum()) * fan_in
    return total


def _center(shape: tuple[int, ...]) -> int:
    """Flat index of the neuron at the middle of every spatial axis (channel 0)."""
    idx = 0
    for d, n in enumerate(shape):
        idx = idx * n + (n // 2 if d else 0)
    return idx

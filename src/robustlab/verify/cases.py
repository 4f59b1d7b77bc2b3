"""Verification of networks with data-dependent indexing (case variables, ``_onnx/cases.py``): the
input region is split into the cells where every case variable (an integer cast from the input)
is constant; on each cell the network equals an *augmented* network whose case values are extra
inputs fixed to that cell's values, so each cell is an ordinary region (a case split, as for any
piecewise-constant operation).

Sound: the cells cover the region (each widened by a little slack for float32 rounding of the
input), and every ``holds`` comes from the bound engine on the augmented network or, for a cell
that is a single point of the augmented network's inputs, from its float64 evaluation with the
engine's margin. Every counterexample is re-checked on the real network by onnxruntime."""

from __future__ import annotations

import copy
import itertools
import math
import operator

import numpy as np
import torch
from torch import Tensor, fx, nn

from robustlab import deadline as deadlines
from robustlab._onnx.cases import CaseValue
from robustlab.bounds.api import compute_bounds
from robustlab.threat import Box
from robustlab.verify.engine import verify_spec
from robustlab.verify.margins import HOLD_ULPS, UNIT
from robustlab.verify.oracle import confirm
from robustlab.verify.spec import Property, Spec

MAX_CASES = 100_000  # cells per region; more is refused (unknown)
EVAL_BATCH = 256
SLACK = 2.0**-20  # relative widening of each cell (float32 rounding of the input: 2^-24)

_SELECT_FUNCTIONS = {operator.getitem, torch.reshape, torch.squeeze, torch.unsqueeze,
                     torch.flatten, torch.index_select, torch.permute}  # fmt: skip
_SELECT_METHODS = {"reshape", "view", "squeeze", "unsqueeze", "flatten", "permute", "double",
                   "float", "contiguous"}  # fmt: skip


def case_nodes(module: nn.Module) -> list[fx.Node]:
    """The ``CaseValue`` nodes of a converted module (empty for most networks)."""
    graph = getattr(module, "graph", None)
    if not isinstance(graph, fx.Graph):
        return []
    return [n for n in graph.nodes if n.op == "call_function" and isinstance(n.target, CaseValue)]


def _is_selection(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An operation that only moves or selects entries (reading which inputs it reads is exact)."""
    if node.op == "call_function":
        return node.target in _SELECT_FUNCTIONS
    if node.op == "call_method":
        return node.target in _SELECT_METHODS
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.Flatten)
    return False


def _selections(gm: fx.GraphModule, n_inputs: int, shape) -> tuple[dict, Tensor]:
    """Run the selection-only nodes reachable from the input on ``arange(n_inputs)``: each such
    node's value holds the input index of each of its entries. Also returns which inputs reach
    some other operation (those the network reads as data)."""
    index = torch.arange(n_inputs, dtype=torch.float64).reshape(1, *shape)
    values: dict[fx.Node, Tensor] = {}
    read = torch.zeros(n_inputs, dtype=torch.bool)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            values[node] = index
            continue
        inputs = [a for a in node.all_input_nodes if a in values]
        if not inputs:
            continue
        if node.op != "output" and _is_selection(gm, node):
            args = fx.node.map_arg(node.args, lambda a: _value(gm, values, a))
            kwargs = fx.node.map_arg(node.kwargs, lambda a: _value(gm, values, a))
            if node.op == "call_function":
                values[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                name = node.target if node.target not in ("float", "double") else "double"
                values[node] = getattr(args[0], name)(*([] if name == "double" else args[1:]))
            else:
                values[node] = gm.get_submodule(node.target)(*args)
            continue
        for a in inputs:
            read[values[a].reshape(-1).long()] = True
    return values, read


def _value(gm: fx.GraphModule, values: dict, node: fx.Node):
    if node in values:
        return values[node]
    if node.op == "get_attr":
        return gm.get_buffer(node.target) if "." not in node.target else getattr(gm, node.target)
    raise ValueError(f"node {node.name} is not a selection of the input")


def augmented(gm: fx.GraphModule, shape, nodes: list[fx.Node]) -> tuple[fx.GraphModule, int]:
    """The network with each case value read from extra inputs after the ``numel(shape)`` data
    inputs (flat, in the order of ``nodes``); returns it and the number of extra inputs."""
    n = math.prod(shape)
    g = fx.Graph()
    z = g.placeholder("z")
    part = g.call_function(operator.getitem, (z, (slice(None), slice(0, n))))
    env: dict[fx.Node, fx.Node] = {}
    offset = n
    out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = g.call_function(torch.reshape, (part, (-1, *shape)))
        elif node in nodes:
            fn: CaseValue = node.target
            size = math.prod(fn.shape)
            piece = g.call_function(
                operator.getitem, (z, (slice(None), slice(offset, offset + size)))
            )
            value = g.call_function(torch.reshape, (piece, (-1, *fn.shape)))
            if not fn.dtype.is_floating_point:
                value = g.call_method("to", (value, fn.dtype))
            env[node] = value
            offset += size
        elif node.op == "output":
            out = g.output(fx.node.map_arg(node.args[0], lambda a: env[a]))
        else:
            env[node] = g.node_copy(node, lambda a: env[a])
    assert out is not None
    module = fx.GraphModule(gm, g, class_name="CaseAugmented")
    module.graph.eliminate_dead_code()
    module.recompile()
    return module.eval(), offset - n


def _cell(k: int) -> tuple[float, float]:
    """The reals whose truncation is ``k``, as a closed interval widened by the slack."""
    lo, hi = (k, k + 1) if k > 0 else (-1, 1) if k == 0 else (k - 1, k)
    s = SLACK * (abs(k) + 1)
    return lo - s, hi + s


class _AugmentedOracle:
    """The real network's oracle on the augmented network's inputs (the extra inputs dropped)."""

    def __init__(self, oracle, n: int) -> None:
        self.oracle, self.n = oracle, n

    @property
    def busy(self) -> bool:
        return getattr(self.oracle, "busy", False)

    def __call__(self, z: Tensor):
        return self.oracle(z.reshape(-1)[: self.n])

    def fed(self, z: Tensor) -> Tensor:
        z = z.reshape(-1)
        head = self.oracle.fed(z[: self.n]) if hasattr(self.oracle, "fed") else z[: self.n]
        return torch.cat([head.double(), z[self.n :].double()])


def _sources(gm, nodes, values, spec: Spec, r: int):
    """Per element of the case variables' sources (flattened, in order): (input index or -1,
    range of integers). A source that is not a plain selection of inputs is bounded by IBP."""

    coords, ranges = [], []
    lo, hi = spec.lower[r], spec.upper[r]
    for src in nodes[0].args:
        if src in values:
            idx = values[src].reshape(-1).long()
            coords += idx.tolist()
            a, b = lo[idx], hi[idx]
        else:
            sub = _prefix(gm, src)
            box = Box(lo[None].to(torch.float64), hi[None].to(torch.float64))
            bounds = compute_bounds(sub, box, method="ibp")
            a, b = bounds.lower.reshape(-1).double(), bounds.upper.reshape(-1).double()
            coords += [-1] * a.numel()
        s = SLACK * (a.abs() + 1)
        for u, v in zip((a - s).tolist(), (b + s).tolist(), strict=True):
            if not (math.isfinite(u) and math.isfinite(v)):
                return None
            ranges.append(range(math.trunc(u), math.trunc(v) + 1))
    return coords, ranges


def _prefix(gm: fx.GraphModule, out: fx.Node) -> fx.GraphModule:
    """The part of ``gm`` that computes ``out`` (flattened per sample), as a module."""
    keep, todo = set(), [out]
    while todo:
        node = todo.pop()
        if node not in keep:
            keep.add(node)
            todo += node.all_input_nodes
    g, env = fx.Graph(), {}
    for node in gm.graph.nodes:
        if node in keep:
            env[node] = g.node_copy(node, lambda a: env[a])
    g.output(g.call_function(torch.flatten, (env[out], 1)))
    return fx.GraphModule(gm, g).eval()


def _margin(prop: Property, y: Tensor) -> float:
    """How far a point's violation must clear 0 for ``holds`` (margins.margin_of's magnitude:
    what rounding the outputs to float32 can change)."""
    C, d, _ = prop.stacked
    if len(d) == 0:
        return math.inf
    scale = float(d.abs().max()) + float(C.abs().sum(1).max()) * float(y.abs().max())
    return HOLD_ULPS * UNIT * scale


def _cells(spec: Spec, r: int, coords: list[int], ranges: list[range], read: Tensor):
    """Per cell of region ``r``: (the integers, the restricted inputs {index: (lo, hi)}, a
    point of the cell). Inputs read only by case variables shrink to that point."""
    base_lo, base_hi = spec.lower[r], spec.upper[r]
    for ks in itertools.product(*ranges):
        box: dict[int, tuple[float, float]] = {}
        for c, k in zip(coords, ks, strict=True):
            if c >= 0:
                a, b = _cell(k)
                lo0, hi0 = box.get(c, (float(base_lo[c]), float(base_hi[c])))
                box[c] = (max(lo0, a), min(hi0, b))
        if any(lo > hi for lo, hi in box.values()):
            continue
        point = {}
        for c, k in zip(coords, ks, strict=True):  # a point of the cell: trunc gives k
            if c >= 0:
                point[c] = min(max(float(k), box[c][0]), box[c][1])
                if not read[c]:
                    box[c] = (point[c], point[c])
        yield ks, box, point


def _key(program, ks: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    key, start = [], 0
    for _, t, vshape in program.variables:
        size = math.prod(vshape)
        key.append(np.asarray(ks[start : start + size], dtype=np.int64).astype(t).reshape(vshape))
        start += size
    return tuple(key)


def verify_cases(model, shape, spec: Spec, oracle, *, deadline: float, strategy: str, stats: dict):
    """``(verdict, counterexample, strategy, message)`` for a network with case variables: one
    region of the augmented network per (region, cell); a cell whose augmented box is a point
    is decided by evaluating it, the others by :func:`verify_spec` on the augmented network."""

    nodes = case_nodes(model)
    n = math.prod(shape)
    aug, m = augmented(model, shape, nodes)
    values, _ = _selections(model, n, shape)
    _, read = _selections(aug, n + m, (n + m,))
    read = read[:n]
    fns: list[CaseValue] = [node.target for node in nodes]
    net = copy.deepcopy(aug).double()
    wide: list[Property] = []
    near = cases = 0
    for r in range(len(spec)):
        found = _sources(model, nodes, values, spec, r)
        if found is None:
            return "unknown", None, "cases", "a case variable is unbounded"
        coords, ranges = found
        count = math.prod(len(x) for x in ranges)
        if count > MAX_CASES:
            msg = f"{count} cases of the data-dependent indexing; at most {MAX_CASES} are split"
            return "unknown", None, "cases", msg
        base = spec.property(r)
        free = (base.lower != base.upper) & read
        free[[c for c in coords if c >= 0]] = False
        fixed = not bool(free.any())  # every input the network reads is fixed, but the cases
        batch: list[tuple[Tensor, Tensor]] = []  # (augmented point, point of the network)
        cells = _cells(spec, r, coords, ranges, read)
        while True:
            chunk = list(itertools.islice(cells, EVAL_BATCH))
            if not chunk:
                break
            deadlines.check()
            batch.clear()
            for ks, box, point in chunk:
                cases += 1
                try:
                    extra = torch.cat(
                        [fn.values(_key(fns[0].program, ks)).reshape(-1) for fn in fns]
                    )
                except ValueError as e:
                    return "unknown", None, "cases", str(e)
                idx = torch.tensor(list(box), dtype=torch.long)
                lo, hi = base.lower.clone(), base.upper.clone()
                lo[idx] = torch.tensor([b[0] for b in box.values()], dtype=lo.dtype)
                hi[idx] = torch.tensor([b[1] for b in box.values()], dtype=hi.dtype)
                x = base.lower.clone()
                x[idx] = torch.tensor(list(point.values()), dtype=x.dtype)
                if fixed and all(box[c][0] == box[c][1] for c in box if read[c]):
                    batch.append((torch.cat([lo, extra]), x))
                else:
                    wide.append(
                        Property(torch.cat([lo, extra]), torch.cat([hi, extra]), base.disjuncts)
                    )
            if not batch:
                continue
            z = torch.stack([b[0] for b in batch])
            with torch.no_grad():
                y = net(z).reshape(len(batch), -1).double()
            for (_, x), yi, vi in zip(batch, y, base.violation(y).tolist(), strict=True):
                if vi > _margin(base, yi):
                    continue
                if vi <= 0:
                    cex = confirm(oracle, base.lower, base.upper, base.violation, x)
                    if cex is not None:
                        stats["cases"], stats["proved_by"] = cases, "case split"
                        return "violated", cex, "cases", ""
                near += 1
    stats["cases"], stats["open_cases"] = cases, near + len(wide)
    if wide:
        sub = Spec.from_properties(wide, n + m, spec.n_outputs)
        got, cex, used, message = verify_spec(
            aug, (n + m,), sub, _AugmentedOracle(oracle, n), deadline=deadline,
            strategy=strategy, stats=stats,
        )  # fmt: skip
        if got == "violated" and cex is not None:
            return "violated", {**cex, "x": list(cex["x"])[:n]}, f"cases+{used}", message
        if got != "holds":
            return got, None, f"cases+{used}", message
    if near:
        return "unknown", None, "cases", f"{near} cases within the rounding margin"
    stats["proved_by"] = "case split" + (f" + {stats.get('proved_by', 'bounds')}" if wide else "")
    return "holds", None, "cases", ""

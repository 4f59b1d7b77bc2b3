"""Recognised multi-node patterns, converted as one torch call: GELU written with Erf (what
PyTorch exports before opset 20), ``0.5 * x * (1 + erf(x / sqrt(2)))`` in either order of the
products, becomes ``torch.nn.functional.gelu(x)``; the safe softmax that PyTorch exports for
attention with a boolean mask, ``Where(IsNaN(s), 0, s)`` with ``s = Softmax(x)`` (0 for a row
whose entries are all ``-inf``), becomes ``torch._safe_softmax(x, axis)``."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from robustlab._onnx.context import attributes


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_type in (1, 11)}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = attributes(node).get("value")
            if isinstance(value, np.ndarray):
                out[node.output[0]] = value
    return out


def _is(value: np.ndarray | None, target: float) -> bool:
    return (
        value is not None
        and value.size == 1
        and abs(float(value.reshape(())) - target) < 1e-6 * abs(target)
    )


def gelu_patterns(graph: onnx.GraphProto) -> tuple[dict[int, tuple[str, str]], set[int]]:
    """``{index of the pattern's last node: (x, output)}`` and the indices of the nodes it
    replaces. A pattern is used only when its inner values feed nothing else."""
    consts, nodes = _constants(graph), list(graph.node)
    uses = Counter(name for n in nodes for name in n.input)
    uses.update(o.name for o in graph.output)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)

    def other(node: onnx.NodeProto, name: str) -> str | None:
        rest = [v for v in node.input if v != name]
        return rest[0] if len(node.input) == 2 and len(rest) == 1 else None

    def only(name: str, op: str) -> int | None:
        users = consumers.get(name, [])
        if uses[name] == 1 and len(users) == 1 and nodes[users[0]].op_type == op:
            return users[0]
        return None

    found: dict[int, tuple[str, str]] = {}
    replaced: set[int] = set()
    for e, node in enumerate(nodes):
        if node.op_type != "Erf" or node.input[0] not in producer:
            continue
        d = producer[node.input[0]]
        scale = nodes[d]
        if scale.op_type == "Div" and _is(consts.get(scale.input[1]), math.sqrt(2.0)):
            x = scale.input[0]
        elif scale.op_type == "Mul" and any(
            _is(consts.get(v), 1 / math.sqrt(2.0)) for v in scale.input
        ):
            x = next(v for v in scale.input if not _is(consts.get(v), 1 / math.sqrt(2.0)))
        else:
            continue
        a = only(node.output[0], "Add")
        if (
            uses[scale.output[0]] != 1
            or a is None
            or not _is(consts.get(other(nodes[a], node.output[0])), 1.0)
        ):
            continue
        m = only(nodes[a].output[0], "Mul")
        if m is None:
            continue
        partner = other(nodes[m], nodes[a].output[0])
        inner = {d, e, a, m}
        if partner == x:  # (x * (1 + erf)) * 0.5
            h = only(nodes[m].output[0], "Mul")
            if h is None or not _is(consts.get(other(nodes[h], nodes[m].output[0])), 0.5):
                continue
            last = h
        elif partner in producer and nodes[producer[partner]].op_type == "Mul":
            h = producer[partner]  # (x * 0.5) * (1 + erf)
            if (
                uses[partner] != 1
                or x not in nodes[h].input
                or not _is(consts.get(other(nodes[h], x)), 0.5)
            ):
                continue
            inner.add(h)
            last = m
        else:
            continue
        if any(o.name in {nodes[i].output[0] for i in inner if i != last} for o in graph.output):
            continue
        found[last] = (x, nodes[last].output[0])
        replaced |= inner - {last}
    return found, replaced


def safe_softmax_patterns(graph: onnx.GraphProto) -> tuple[dict[int, int], set[int]]:
    """``{index of the Where: index of the Softmax}`` of ``Where(IsNaN(s), 0, s)``,
    ``s = Softmax(x)``, where ``s`` and the IsNaN feed nothing else, and the indices replaced."""
    consts, nodes = _constants(graph), list(graph.node)
    uses = Counter(name for n in nodes for name in n.input)
    uses.update(o.name for o in graph.output)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    found: dict[int, int] = {}
    replaced: set[int] = set()
    for w, node in enumerate(nodes):
        if node.op_type != "Where" or len(node.input) != 3:
            continue
        cond, zero, s = node.input
        n, sm = producer.get(cond), producer.get(s)
        if n is None or sm is None or nodes[n].op_type != "IsNaN" or nodes[n].input[0] != s:
            continue
        value = consts.get(zero)
        if nodes[sm].op_type != "Softmax" or value is None or value.size != 1 or value.any():
            continue
        if uses[s] != 2 or uses[cond] != 1:
            continue
        found[w] = sm
        replaced |= {n, sm}
    return found, replaced

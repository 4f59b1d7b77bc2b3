"""ONNX -> torch.fx for an explicit operation set (every other operation is named in an error).

Constants and shape arithmetic are folded at import (any standard operation, with onnx's
reference implementation); operations on input-dependent tensors become the standard torch calls
listed in the contract with the bound rules. Several inputs become one flat input (the inputs
flattened in declared order, concatenated, as VNN-LIB numbers them), several outputs one flat
output."""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import fx

from robustlab._onnx import ops_layers, ops_math, ops_shape
from robustlab._onnx.cases import Case
from robustlab._onnx.context import EXAMPLE_BATCH, Ctx, Dyn, ident
from robustlab._onnx.patterns import gelu_patterns, safe_softmax_patterns
from robustlab.errors import RobustlabError, UnsupportedOperation

_Handler = Callable[[Ctx, onnx.NodeProto], None]

_HANDLERS: dict[str, _Handler] = {
    **ops_layers.HANDLERS,
    **ops_math.HANDLERS,
    **ops_shape.HANDLERS,
}

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_HANDLERS))
_DOMAINS = ("", "ai.onnx")
_FLOATS = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
           onnx.TensorProto.FLOAT16: torch.float32, onnx.TensorProto.BFLOAT16: torch.float32}  # fmt: skip


def input_dims(info: onnx.ValueInfoProto) -> list[int]:
    """The declared shape of a graph input with its batch size fixed: a symbolic or missing first
    dimension is 1 (the batch); every other dimension must be a number."""
    ttype = info.type.tensor_type
    if not info.type.HasField("tensor_type") or not ttype.HasField("shape"):
        raise RobustlabError(f"ONNX input '{info.name}' has no declared tensor shape")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    if any(d is not None and d <= 0 for d in dims):
        raise RobustlabError(f"ONNX input '{info.name}' has shape {dims}; sizes must be positive")
    if dims and dims[0] is None:
        if len(dims) == 1:
            raise RobustlabError(
                f"ONNX input '{info.name}' has one symbolic dimension; expected a fixed size"
            )
        dims[0] = 1
    if any(d is None for d in dims):
        raise RobustlabError(
            f"ONNX input '{info.name}' has shape {_show(ttype.shape)}; all but the batch must be fixed"
        )
    return [int(d) for d in dims]


def _show(shape: onnx.TensorShapeProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers, in declared order."""
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def opset_of(proto: onnx.ModelProto) -> int:
    versions = [o.version for o in proto.opset_import if o.domain in _DOMAINS]
    if not versions:
        raise RobustlabError("the ONNX model imports no version of the standard operator set")
    return max(versions)


def _placeholders(ctx: Ctx, inputs: list[onnx.ValueInfoProto]) -> tuple[int, ...]:
    """Create the placeholder; bind every ONNX input to its part of it. Returns the sample shape."""
    dims = [input_dims(i) for i in inputs]
    names = ", ".join(i.name for i in inputs)
    placeholder = ctx.graph.placeholder(ident(inputs[0].name if len(inputs) == 1 else "x", "x"))
    numels = [math.prod(d) for d in dims]
    if len(inputs) == 1:
        batched = len(dims[0]) > 1 and dims[0][0] == 1
        shape = tuple(dims[0][1:] if batched else dims[0])
    else:
        shape = (sum(numels),)
    example = torch.rand(EXAMPLE_BATCH, *shape, generator=torch.Generator().manual_seed(0))
    x = Dyn(placeholder, example.to(ctx.dtype), len(inputs) == 1 and batched)
    if ctx.dtype == torch.float64:
        ctx.begin(onnx.NodeProto(), "input")
        ctx.name = "input_double"
        x = ctx.method("double", Dyn(placeholder, example, x.batched))
    if len(inputs) == 1:
        ctx.values[inputs[0].name] = x
        return shape
    start = 0
    for info, d, n in zip(inputs, dims, numels, strict=True):
        ctx.begin(onnx.NodeProto(op_type="Input"), info.name)
        ctx.name = ident(f"input_{info.name}", "input")
        part = ctx.call(operator.getitem, x, (slice(None), slice(start, start + n)), batched=False)
        ctx.values[info.name] = ctx.reshape(part, d)
        start += n
    if not names:
        raise RobustlabError("the ONNX model has no inputs")
    return shape


def _output(ctx: Ctx, graph: onnx.GraphProto) -> fx.Node:
    """The fx output: the one output in its own shape, or every output flattened and concatenated."""
    results = []
    for out in graph.output:
        value = ctx.values.get(out.name)
        if isinstance(value, Case):
            value = ctx.lifted(value)
        if not isinstance(value, Dyn):
            raise RobustlabError(f"ONNX output '{out.name}' does not depend on the input")
        results.append(value)
    if not results:
        raise RobustlabError("the ONNX model has no outputs")
    ctx.begin(onnx.NodeProto(op_type="Output"), "output")
    if len(results) == 1:
        y = ctx.rebatch(results[0])
        return (
            y.node
            if y.example.ndim > 1
            else ctx.call(torch.reshape, y, (-1, 1), batched=False).node
        )
    flat = [
        ctx.call(torch.reshape, r, (-1, max(math.prod(r.shape), 1)), batched=False) for r in results
    ]
    return ctx.call(torch.cat, flat, 1, batched=False).node


def onnx_to_torch(proto: onnx.ModelProto) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """Convert an ONNX model to an eval-mode GraphModule (float32, or float64 for float64 models);
    also return the per-sample input shape (``(total,)`` for several inputs)."""
    graph = proto.graph
    opset = opset_of(proto)
    inputs = graph_inputs(proto)
    if not inputs:
        raise RobustlabError("the ONNX model has no inputs")
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in _FLOATS or any(i.type.tensor_type.elem_type != elem for i in inputs):
        found = [onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type) for i in inputs]
        raise RobustlabError(f"expected floating-point ONNX inputs of one type; found {found}")
    uses = Counter(name for node in graph.node for name in node.input)
    uses.update(o.name for o in graph.output)
    ctx = Ctx(opset, _FLOATS[elem], uses)
    for t in graph.initializer:
        ctx.values[t.name] = _array(t)
    shape = _placeholders(ctx, inputs)
    gelus, replaced = gelu_patterns(graph)
    safe, replaced_safe = safe_softmax_patterns(graph)
    replaced |= replaced_safe
    for index, node in enumerate(graph.node):
        label = node.name or (node.output[0] if node.output else f"{node.op_type}_{index}")
        if index in replaced:
            continue
        if index in safe:  # Where(IsNaN(softmax(x)), 0, softmax(x)): one safe softmax
            sm = graph.node[safe[index]]
            ctx.begin(onnx.helper.make_node("Softmax", list(sm.input), list(node.output)), label)
            ctx.node.attribute.extend(sm.attribute)
            ops_math.softmax(ctx, ctx.node, safe=True)
            continue
        if index in gelus:  # 0.5 * x * (1 + erf(x / sqrt(2))): one GELU
            ctx.begin(onnx.helper.make_node("Gelu", [gelus[index][0]], [gelus[index][1]]), label)
            x = ctx.get(0)
            if isinstance(x, Dyn):
                _HANDLERS["Gelu"](ctx, ctx.node)
            else:
                ctx.set(F.gelu(torch.from_numpy(np.array(x, copy=True))).numpy())
            continue
        ctx.begin(node, label)
        if node.domain not in _DOMAINS:
            raise UnsupportedOperation(
                f"ONNX operation '{node.op_type}' of domain '{node.domain}' at node '{label}' "
                f"is not supported; supported: {', '.join(SUPPORTED_OPS)} (standard domain)"
            )
        values = ctx.inputs()
        if not any(isinstance(v, Dyn) for v in values):
            if any(isinstance(v, Case) for v in values):
                ctx.case_node(node, values)
            else:
                ctx.fold(node, values)
            continue
        if _starts_case(node, values):
            ctx.case_variable(values[0], _cast_type(node))
            continue
        ctx.lift = True
        if node.op_type not in _HANDLERS:
            raise UnsupportedOperation(
                f"ONNX operation '{node.op_type}' at node '{label}' is not supported; "
                f"supported: {', '.join(SUPPORTED_OPS)}"
            )
        _HANDLERS[node.op_type](ctx, node)
        for i, name in enumerate(node.output):
            if name and name not in ctx.values and uses[name]:
                raise ctx.fail(f"output {i} ('{name}') is not supported")
    ctx.graph.output(_output(ctx, graph))
    module = fx.GraphModule(ctx.root, ctx.graph, class_name="OnnxModel")
    return module.eval(), shape


def _cast_type(node: onnx.NodeProto) -> np.dtype:
    to = next(a.i for a in node.attribute if a.name == "to")
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))


def _starts_case(node: onnx.NodeProto, values: list) -> bool:
    """A Cast of an input-dependent float to an integer type: a case variable (cases.py)."""
    if node.op_type != "Cast" or not isinstance(values[0], Dyn):
        return False
    if not values[0].example.is_floating_point():
        return False
    return _cast_type(node).kind in "iu"


def _array(t: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except Exception as exc:  # corrupt or external data
        raise RobustlabError(f"ONNX initializer '{t.name}' cannot be read ({exc})") from None

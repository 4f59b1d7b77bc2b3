"""Elementwise arithmetic, nonlinear functions, reductions and softmax (torch forms as in the
contract between the importer and the bound rules)."""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from robustlab._onnx.context import Ctx, Dyn, Value

Handler = Callable[[Ctx, onnx.NodeProto], None]

# with a constant operand: torch.* (as before); two input-dependent operands: operator.*
_CONST_FN = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
_DYN_FN = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv}


def binary(ctx: Ctx, op: str, a: Value, b: Value) -> Dyn:
    """``a op b`` with ONNX broadcasting, one operand at least input-dependent."""
    if isinstance(a, Dyn) and isinstance(b, Dyn):
        a, b = ctx.align(a, b)
        return ctx.call(_DYN_FN[op], a, b, batched=a.batched)
    dyn_first = isinstance(a, Dyn)
    x, c = ctx.torch_const(*((a, b) if dyn_first else (b, a)))
    args = (x, c) if dyn_first or op in ("Add", "Mul") else (c, x)
    return ctx.call(_CONST_FN[op], *args, batched=x.batched)


def _op_arith(ctx: Ctx, node: onnx.NodeProto) -> None:
    a, b = ctx.get(0), ctx.get(1)
    x = a if isinstance(a, Dyn) else b
    layer = x.module if isinstance(x, Dyn) else None
    other = b if x is a else a
    if (  # fuse a bias into the preceding bias-free Linear (from MatMul)
        node.op_type == "Add"
        and isinstance(layer, nn.Linear)
        and layer.bias is None
        and isinstance(other, np.ndarray)
        and other.dtype.kind == "f"
        and other.ndim <= 1
        and other.size in (1, layer.out_features)
        and ctx.uses[node.input[0 if x is a else 1]] == 1
    ):
        bias = torch.from_numpy(np.broadcast_to(other, (layer.out_features,)).copy())
        layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
        ctx.set(Dyn(x.node, x.example + layer.bias.detach(), x.batched, layer))
        return
    ctx.set(binary(ctx, node.op_type, a, b))


def _module(factory: Callable[[dict], nn.Module]) -> Handler:
    def handler(ctx: Ctx, node: onnx.NodeProto) -> None:
        ctx.set(ctx.call_module(factory(ctx.attrs()), ctx.dyn(0)))

    return handler


def _function(fn: Callable) -> Handler:
    def handler(ctx: Ctx, node: onnx.NodeProto) -> None:
        x = ctx.dyn(0)
        ctx.set(ctx.call(fn, x, batched=x.batched))

    return handler


def _op_pow(ctx: Ctx, node: onnx.NodeProto) -> None:
    base, exponent = ctx.get(0), ctx.get(1)
    if isinstance(base, Dyn) and isinstance(exponent, np.ndarray):
        if exponent.size == 1:
            p = exponent.reshape(()).item()
            p = float(p) if not float(p).is_integer() or exponent.dtype.kind == "f" else int(p)
            ctx.set(ctx.call(torch.pow, base, p, batched=base.batched))
            return
        x, c = ctx.torch_const(base, exponent)
        ctx.set(ctx.call(torch.pow, x, c, batched=x.batched))
    elif isinstance(base, Dyn) and isinstance(exponent, Dyn):
        a, b = ctx.align(base, exponent)
        ctx.set(ctx.call(torch.pow, a, b, batched=a.batched))
    else:
        x, c = ctx.torch_const(ctx.dyn(1), base)
        ctx.set(ctx.call(torch.pow, c, x, batched=x.batched))


def _scalar(ctx: Ctx, value: Value | None, what: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, np.ndarray) or value.size != 1:
        raise ctx.fail(f"{what} must be a constant scalar")
    return float(value.reshape(()).item())


def _op_clip(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.dyn(0)
    if ctx.opset < 11:
        attrs = ctx.attrs()
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low, high = _scalar(ctx, ctx.get(1), "min"), _scalar(ctx, ctx.get(2), "max")
    if low is None and high is None:
        ctx.set(x)
        return
    ctx.set(ctx.call(torch.clamp, x, low, high, batched=x.batched))


def _op_minmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    fn = torch.minimum if node.op_type == "Min" else torch.maximum
    values = [v for v in ctx.inputs() if v is not None]
    acc = values[0]
    for v in values[1:]:
        if isinstance(acc, np.ndarray) and isinstance(v, np.ndarray):
            acc = np.minimum(acc, v) if node.op_type == "Min" else np.maximum(acc, v)
        elif isinstance(acc, Dyn) and isinstance(v, Dyn):
            a, b = ctx.align(acc, v)
            acc = ctx.call(fn, a, b, batched=a.batched)
        else:
            x, c = (acc, v) if isinstance(acc, Dyn) else (v, acc)
            x, c = ctx.torch_const(x, c)
            acc = ctx.call(fn, x, c, batched=x.batched)
    ctx.set(acc)


_REDUCE = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax,
           "ReduceMin": torch.amin}  # fmt: skip


def _op_reduce(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, x = ctx.attrs(), ctx.dyn(0)
    from_input = node.op_type == "ReduceSum" and ctx.opset >= 13 or ctx.opset >= 18
    axes = ctx.ints(1) if from_input else attrs.get("axes")
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            ctx.set(x)
            return
        axes = list(range(x.rank))
    axes = sorted({a % max(x.rank, 1) for a in axes})
    if x.batched and 0 in axes:
        x = ctx.unbatch(x)
    dims = tuple(a + (0 if x.batched else 1) for a in axes)
    ctx.set(ctx.call(_REDUCE[node.op_type], x, dim=dims, keepdim=keep, batched=x.batched))


def _op_softmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    softmax(ctx, node)


def softmax(ctx: Ctx, node: onnx.NodeProto, safe: bool = False) -> None:
    """Softmax / LogSoftmax; ``safe``: 0 for rows whose entries are all ``-inf`` (patterns.py)."""
    if safe and not isinstance(ctx.get(0), Dyn):
        x = torch.from_numpy(np.array(ctx.get(0), copy=True))
        axis = ctx.attrs().get("axis", -1) % max(x.dim(), 1)
        ctx.set(torch._safe_softmax(x, axis).numpy())
        return
    x = ctx.dyn(0)
    axis = ctx.attrs().get("axis", -1 if ctx.opset >= 13 else 1) % max(x.rank, 1)
    if ctx.opset < 13 and any(d != 1 for d in x.shape[axis + 1 :]):
        raise ctx.fail("before opset 13, softmax over several axes is supported only for the last")
    if ctx.opset < 13:
        axis = max((a for a in range(axis, x.rank) if x.shape[a] != 1), default=axis)
    x, dim = ctx.axis(x, axis)
    fn = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    ctx.set(ctx.call(torch._safe_softmax if safe else fn, x, dim, batched=x.batched))


def _op_gelu(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, approximate = ctx.dyn(0), ctx.attrs().get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.fail(f"approximate='{approximate}' is not supported")
    kwargs = {} if approximate == "none" else {"approximate": "tanh"}
    ctx.set(ctx.call(F.gelu, x, batched=x.batched, **kwargs))


def _op_where(ctx: Ctx, node: onnx.NodeProto) -> None:
    cond, a, b = ctx.inputs()
    dyns = [v for v in (cond, a, b) if isinstance(v, Dyn)]
    dyns = ctx.align(*dyns) if len(dyns) > 1 else dyns
    frame = dyns[0]
    args = []
    it = iter(dyns)
    for v in (cond, a, b):
        if isinstance(v, Dyn):
            args.append(next(it))
        else:
            _, c = ctx.torch_const(frame, v)
            if frame.rank < v.ndim or (frame.batched and v.ndim == frame.rank and v.shape[0] != 1):
                raise ctx.fail("a constant operand would broadcast over the batch")
            args.append(c)
    ctx.set(ctx.call(torch.where, *args, batched=frame.batched))


_COMPARE = {"Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
            "GreaterOrEqual": torch.ge}  # fmt: skip


def _op_compare(ctx: Ctx, node: onnx.NodeProto) -> None:
    a, b = ctx.get(0), ctx.get(1)
    fn = _COMPARE[node.op_type]
    if isinstance(a, Dyn) and isinstance(b, Dyn):
        a, b = ctx.align(a, b)
        ctx.set(ctx.call(fn, a, b, batched=a.batched))
        return
    x, c = ctx.torch_const(a if isinstance(a, Dyn) else b, b if isinstance(a, Dyn) else a)
    args = (x, c) if isinstance(a, Dyn) else (c, x)
    ctx.set(ctx.call(fn, *args, batched=x.batched))


def _op_cast(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.dyn(0)
    target = onnx.helper.tensor_dtype_to_np_dtype(ctx.attrs()["to"])
    if np.dtype(target).kind == "f":
        ctx.set(x if x.example.is_floating_point() else ctx.method("to", x, ctx.dtype))
    elif np.dtype(target).kind == "b":
        ctx.set(ctx.method("to", x, torch.bool))
    elif np.dtype(target).kind in "iu":
        ctx.set(ctx.method("to", x, torch.int64))
    else:
        raise ctx.fail(f"cast to {np.dtype(target)} is not supported")


def _op_argmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs = ctx.attrs()
    if attrs.get("select_last_index", 0):
        raise ctx.fail("select_last_index=1 is not supported")
    x, dim = ctx.axis(ctx.dyn(0), attrs.get("axis", 0))
    fn = torch.argmax if node.op_type == "ArgMax" else torch.argmin
    keep = bool(attrs.get("keepdims", 1))
    ctx.set(ctx.call(fn, x, dim, keep, batched=x.batched))


HANDLERS: dict[str, Handler] = {
    "Abs": _function(torch.abs),
    "Add": _op_arith,
    "ArgMax": _op_argmax,
    "ArgMin": _op_argmax,
    "Cast": _op_cast,
    "Clip": _op_clip,
    "Cos": _function(torch.cos),
    "Div": _op_arith,
    "Equal": _op_compare,
    "Erf": _function(torch.erf),
    "Exp": _function(torch.exp),
    "Gelu": _op_gelu,
    "Greater": _op_compare,
    "GreaterOrEqual": _op_compare,
    "LeakyRelu": _module(lambda a: nn.LeakyReLU(a.get("alpha", 0.01))),
    "Less": _op_compare,
    "LessOrEqual": _op_compare,
    "Log": _function(torch.log),
    "LogSoftmax": _op_softmax,
    "Max": _op_minmax,
    "Min": _op_minmax,
    "Mul": _op_arith,
    "Neg": _function(operator.neg),
    "Pow": _op_pow,
    "Reciprocal": _function(torch.reciprocal),
    "ReduceMax": _op_reduce,
    "ReduceMean": _op_reduce,
    "ReduceMin": _op_reduce,
    "ReduceSum": _op_reduce,
    "Relu": _module(lambda a: nn.ReLU()),
    "Sigmoid": _module(lambda a: nn.Sigmoid()),
    "Sign": _function(torch.sign),
    "Sin": _function(torch.sin),
    "Softmax": _op_softmax,
    "Sqrt": _function(torch.sqrt),
    "Sub": _op_arith,
    "Tanh": _module(lambda a: nn.Tanh()),
    "Where": _op_where,
}

# torch calls whose output jumps: a tiny rounding difference can change it (see check.py)
DISCONTINUOUS = frozenset({torch.sign, torch.argmax, torch.argmin, *_COMPARE.values()})


def is_discrete(module: nn.Module) -> bool:
    """Whether a converted module has an operation whose output jumps (sign, argmax, comparisons,
    casts to integers)."""
    graph = getattr(module, "graph", None)
    return graph is not None and any(
        (n.op == "call_function" and n.target in DISCONTINUOUS)
        or (n.op == "call_method" and n.target == "to")
        for n in graph.nodes
    )

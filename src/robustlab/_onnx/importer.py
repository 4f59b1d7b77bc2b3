"""ONNX -> torch.fx for an explicit operation set (every other operation is named in an error)."""

from __future__ import annotations

import keyword
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import fx, nn

from robustlab.errors import RobustlabError, UnsupportedOperation


@dataclass
class _Dyn:
    """A value that depends on the input: its fx node and a batch-1 example in the torch frame."""

    node: fx.Node
    example: torch.Tensor
    module: nn.Module | None = None


@dataclass(frozen=True)
class _Shape:
    """An int64 value derived from a shape; an entry None stands for the runtime batch size."""

    dims: tuple[int | None, ...]
    scalar: bool = False


_Value = torch.Tensor | _Dyn | _Shape


def _tensor(array: Any) -> torch.Tensor:
    """Convert an array to a torch constant: floats to float32, integers to int64."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    elif array.dtype.kind in "iu":
        array = array.astype(np.int64)
    return torch.from_numpy(array.copy())


def _shape_value(dims: list[int | None], scalar: bool = False) -> _Value:
    """A shape-derived value: a plain constant when the batch size is not among its entries."""
    if None in dims:
        return _Shape(tuple(dims), scalar)
    return torch.tensor(dims[0] if scalar else dims, dtype=torch.int64)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded, tensors as torch constants)."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = _tensor(numpy_helper.to_array(value))
        out[attr.name] = value
    return out


def _ident(text: str, fallback: str) -> str:
    """Sanitise an ONNX name into a Python identifier."""
    name = re.sub(r"\W", "_", text).strip("_") or fallback
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"{fallback}_{name}"
    return name


def _unsupported(node: onnx.NodeProto, label: str, why: str) -> UnsupportedOperation:
    return UnsupportedOperation(f"ONNX operation '{node.op_type}' at node '{label}': {why}")


class _Ctx:
    """Conversion state: the fx graph under construction, its root module, ONNX values."""

    def __init__(self, opset: int, offset: int, batch: int | None, uses: Counter[str]) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, _Value] = {}
        self.opset, self.offset, self.batch, self.uses = opset, offset, batch, uses
        self.const_names: dict[int, str] = {}
        self._consts: dict[int, tuple[torch.Tensor, fx.Node]] = {}
        self.node = onnx.NodeProto()
        self.label = self.name = ""

    def begin(self, node: onnx.NodeProto, label: str) -> None:
        self.node, self.label, self.name = node, label, _ident(label, node.op_type.lower())

    def fail(self, why: str) -> UnsupportedOperation:
        return _unsupported(self.node, self.label, why)

    def get(self, i: int) -> _Value | None:
        node = self.node
        if i >= len(node.input) or not node.input[i]:
            return None
        if node.input[i] not in self.values:
            raise RobustlabError(
                f"ONNX value '{node.input[i]}' used by '{self.label}' is undefined"
            )
        return self.values[node.input[i]]

    def const(self, i: int) -> torch.Tensor:
        value = self.get(i)
        if not isinstance(value, torch.Tensor):
            raise self.fail(f"input {i} must be a constant")
        return value

    def dyn(self, i: int = 0) -> _Dyn:
        value = self.get(i)
        if not isinstance(value, _Dyn):
            raise self.fail(f"input {i} must be a tensor computed from the model input")
        return value

    def set(self, value: _Value, i: int = 0) -> None:
        name = self.node.output[i]
        if isinstance(value, torch.Tensor):
            self.const_names.setdefault(id(value), name)
        self.values[name] = value

    def onnx_shape(self, x: _Dyn) -> list[int]:
        return list(x.example.shape[self.offset :])

    def dim(self, x: _Dyn, axis: int) -> int:
        """The torch dimension of an ONNX axis; the batch dimension is refused."""
        rank = x.example.ndim - self.offset
        if not -rank <= axis < rank:
            raise self.fail(f"axis {axis} is out of range for rank {rank}")
        axis %= rank
        if self.offset == 0 and axis == 0:
            raise self.fail("acting along the batch dimension is not supported")
        return axis + self.offset

    def need_batch(self) -> None:
        if self.offset:
            raise self.fail("needs an input with batch and channel dimensions")

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while hasattr(self.root, name):
            name, k = f"{base}_{k}", k + 1
        return name

    def _fx(self, arg: Any) -> Any:
        if isinstance(arg, _Dyn):
            return arg.node
        if isinstance(arg, torch.Tensor):
            if id(arg) not in self._consts:
                hint = self.const_names.get(id(arg), f"{self.name}_const")
                name = self._unique(_ident(hint, "const"))
                self.root.register_buffer(name, arg.detach().clone())
                self._consts[id(arg)] = (arg, self.graph.get_attr(name))
            return self._consts[id(arg)][1]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._fx(a) for a in arg)
        if isinstance(arg, _Shape):
            raise self.fail("a shape value is used as a tensor")
        return arg

    def _example(self, arg: Any) -> Any:
        if isinstance(arg, _Dyn):
            return arg.example
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._example(a) for a in arg)
        return arg

    def _run(self, fn: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        try:
            with torch.no_grad():
                return fn(*self._example(args), **kwargs)
        except RuntimeError as exc:
            raise RobustlabError(f"ONNX node '{self.label}' ({self.node.op_type}): {exc}") from None

    def call_module(self, module: nn.Module, *args: Any, suffix: str = "") -> _Dyn:
        """Add a submodule and a call_module node; run it on the examples."""
        module.eval()
        target = self._unique(self.name + suffix)
        self.root.add_module(target, module)
        example = self._run(module, args, {})
        node = self.graph.create_node("call_module", target, self._fx(args), {}, name=target)
        return _Dyn(node, example, module)

    def call_function(self, fn: Callable, *args: Any, suffix: str = "", **kwargs: Any) -> _Dyn:
        """Add a call_function node; run it on the examples."""
        example = self._run(fn, args, kwargs)
        node = self.graph.create_node(
            "call_function", fn, self._fx(args), self._fx(kwargs), name=self.name + suffix
        )
        return _Dyn(node, example)

    def reshape(self, x: _Dyn, shape: tuple[int, ...] | list[int]) -> _Dyn:
        """Reshape every sample of x to a static per-sample shape."""
        shape = tuple(int(d) for d in shape)
        if tuple(x.example.shape[1:]) == shape:
            return x
        if len(shape) == 1 and x.example.ndim > 2:
            return self.call_module(nn.Flatten(), x)
        return self.call_function(torch.reshape, x, (-1, *shape))

    def pad_input(self, x: _Dyn, pads: list[int], value: float, sym_ok: bool) -> tuple[_Dyn, Any]:
        """Pad x explicitly unless the ONNX pads are symmetric (and sym_ok); return x, padding."""
        nd = len(pads) // 2
        if pads[:nd] == pads[nd:] and sym_ok:
            return x, tuple(pads[:nd])
        flat = [p for d in reversed(range(nd)) for p in (pads[d], pads[nd + d])]
        return self.call_function(F.pad, x, tuple(flat), suffix="_pad", value=value), 0


_Handler = Callable[[_Ctx, onnx.NodeProto], None]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _unary(factory: Callable[[dict[str, Any]], nn.Module]) -> _Handler:
    def handler(ctx: _Ctx, node: onnx.NodeProto) -> None:
        module, x = factory(_attrs(node)), ctx.get(0)
        if isinstance(x, torch.Tensor):
            with torch.no_grad():
                ctx.set(module(x.float()))
        else:
            ctx.set(ctx.call_module(module, ctx.dyn(0)))

    return handler


def _op_alias(ctx: _Ctx, node: onnx.NodeProto) -> None:
    mode = ctx.get(2) if node.op_type == "Dropout" else None
    if isinstance(mode, torch.Tensor) and bool(mode.item()):
        raise ctx.fail("training_mode=True is not supported")
    ctx.set(ctx.get(0))


def _op_constant(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs = _attrs(node)
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = attrs[key]
            ctx.set(value if isinstance(value, torch.Tensor) else _tensor(value))
            return
    raise ctx.fail(f"attribute {sorted(attrs)} is not supported")


_ARITH = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}


def _op_arith(ctx: _Ctx, node: onnx.NodeProto) -> None:
    op, fn = node.op_type, _ARITH[node.op_type]
    a, b = ctx.get(0), ctx.get(1)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        integer = not (a.is_floating_point() or b.is_floating_point())
        ctx.set(torch.div(a, b, rounding_mode="trunc") if op == "Div" and integer else fn(a, b))
        return
    if isinstance(a, _Dyn) and isinstance(b, _Dyn):
        if op in ("Mul", "Div"):
            raise ctx.fail("product or quotient of two non-constant tensors is not supported")
        if a.example.ndim != b.example.ndim:
            raise ctx.fail("operands of different rank would broadcast over the batch")
        ctx.set(ctx.call_function(fn, a, b))
        return
    x, c = (a, ctx.const(1)) if isinstance(a, _Dyn) else (ctx.dyn(1), ctx.const(0))
    c, rank = c.float(), x.example.ndim - ctx.offset
    if c.ndim > rank or (ctx.offset == 0 and c.ndim == rank and c.shape[0] != 1):
        raise ctx.fail(f"constant of shape {list(c.shape)} broadcasts over the batch")
    layer = x.module
    if (  # fuse a bias into the preceding bias-free Linear (from MatMul)
        op == "Add"
        and isinstance(layer, nn.Linear)
        and layer.bias is None
        and ctx.uses[node.input[0 if x is a else 1]] == 1
        and (c.numel() == 1 or (c.shape[-1] == c.numel() == layer.out_features))
    ):
        layer.bias = nn.Parameter(c.reshape(-1).expand(layer.out_features).clone())
        ctx.set(_Dyn(x.node, x.example + layer.bias.detach(), layer))
        return
    ctx.set(ctx.call_function(fn, *((x, c) if x is a or op in ("Add", "Mul") else (c, x))))


def _op_matmul(ctx: _Ctx, node: onnx.NodeProto) -> None:
    a, b = ctx.get(0), ctx.get(1)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        ctx.set(torch.matmul(a.float(), b.float()))
    elif isinstance(a, _Dyn) and isinstance(b, torch.Tensor) and b.ndim == 2 and a.example.ndim > 1:
        ctx.set(ctx.call_module(_linear(b.float().T, None), a))
    elif isinstance(a, torch.Tensor) and isinstance(b, _Dyn) and a.ndim == 2:
        rank = b.example.ndim - ctx.offset
        if ctx.offset and rank == 1:  # W @ x for a sample vector x: a Linear on the rows
            ctx.set(ctx.call_module(_linear(a.float(), None), b))
        elif rank >= 3 or (ctx.offset and rank == 2):
            ctx.set(ctx.call_function(torch.matmul, a.float(), b))
        else:
            raise ctx.fail("constant @ tensor would contract over the batch dimension")
    else:
        raise ctx.fail("MatMul needs one constant 2-D operand")


def _op_gemm(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs = _attrs(node)
    if attrs.get("transA", 0):
        raise ctx.fail("transA=1 is not supported")
    x, b, c = ctx.dyn(0), ctx.const(1).float(), ctx.get(2)
    weight = (b if attrs.get("transB", 0) else b.T) * attrs.get("alpha", 1.0)
    bias = None
    if c is not None:
        c = ctx.const(2).float() * attrs.get("beta", 1.0)
        try:
            bias = torch.broadcast_to(c, (1, weight.shape[0]))[0]
        except RuntimeError:
            raise ctx.fail(f"C of shape {list(c.shape)} does not broadcast to a bias") from None
    ctx.set(ctx.call_module(_linear(weight, bias), x))


def _pads(ctx: _Ctx, attrs: dict[str, Any], nd: int) -> list[int]:
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise ctx.fail(f"auto_pad={auto} is not supported")
    return [0] * 2 * nd if auto == "VALID" else list(attrs.get("pads", [0] * 2 * nd))


def _op_conv(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs, x, weight, bias = _attrs(node), ctx.dyn(0), ctx.const(1).float(), ctx.get(2)
    ctx.need_batch()
    nd, group = weight.ndim - 2, attrs.get("group", 1)
    classes = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
    if nd not in classes or x.example.ndim != nd + 2:
        raise ctx.fail(f"{nd}-D convolution of a rank-{x.example.ndim} tensor is not supported")
    x, padding = ctx.pad_input(x, _pads(ctx, attrs, nd), 0.0, True)
    conv = classes[nd](
        weight.shape[1] * group,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=tuple(attrs.get("strides", [1] * nd)),
        padding=padding,
        dilation=tuple(attrs.get("dilations", [1] * nd)),
        groups=group,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(ctx.const(2))
    ctx.set(ctx.call_module(conv, x))


def _op_batchnorm(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs, x = _attrs(node), ctx.dyn(0)
    ctx.need_batch()
    if attrs.get("training_mode", 0) or not attrs.get("spatial", 1):
        raise ctx.fail("only inference-mode, spatial batch normalisation is supported")
    classes = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
    scale, shift, mean, var = (ctx.const(i).float() for i in range(1, 5))
    norm = classes[x.example.ndim](len(mean), eps=attrs.get("epsilon", 1e-5))
    with torch.no_grad():
        for target, value in zip(
            (norm.weight, norm.bias, norm.running_mean, norm.running_var),
            (scale, shift, mean, var),
            strict=True,
        ):
            target.copy_(value)
    ctx.set(ctx.call_module(norm, x))


def _op_pool(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs, x = _attrs(node), ctx.dyn(0)
    ctx.need_batch()
    kernel = tuple(attrs["kernel_shape"])
    nd = len(kernel)
    if nd not in (1, 2, 3) or x.example.ndim != nd + 2:
        raise ctx.fail(f"{nd}-D pooling of a rank-{x.example.ndim} tensor is not supported")
    stride, ceil = tuple(attrs.get("strides", [1] * nd)), bool(attrs.get("ceil_mode", 0))
    dilation, pads = tuple(attrs.get("dilations", [1] * nd)), _pads(ctx, attrs, nd)
    small = all(2 * p <= k for p, k in zip(pads, kernel * 2, strict=True))
    if node.op_type == "MaxPool":
        x, padding = ctx.pad_input(x, pads, -math.inf, small)
        pool_cls = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[nd - 1]
        pool = pool_cls(kernel, stride, padding, dilation, ceil_mode=ceil)
    else:
        include = bool(attrs.get("count_include_pad", 0))
        if any(d != 1 for d in dilation):
            raise ctx.fail("AveragePool with dilations is not supported")
        if not include and not small or not include and pads[:nd] != pads[nd:]:
            raise ctx.fail("asymmetric or large pads with count_include_pad=0 are not supported")
        x, padding = ctx.pad_input(x, pads, 0.0, small)
        pool_cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[nd - 1]
        pool = pool_cls(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include)
    ctx.set(ctx.call_module(pool, x))


def _op_global_pool(ctx: _Ctx, node: onnx.NodeProto) -> None:
    x = ctx.dyn(0)
    ctx.need_batch()
    nd = x.example.ndim - 2
    if nd not in (1, 2, 3):
        raise ctx.fail(f"global pooling of a rank-{x.example.ndim} tensor is not supported")
    if node.op_type == "GlobalAveragePool":
        pool_cls = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[nd - 1]
    else:
        pool_cls = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)[nd - 1]
    ctx.set(ctx.call_module(pool_cls(1), x))


def _op_pad(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs, x = _attrs(node), ctx.dyn(0)
    if attrs.get("mode", "constant") != "constant":
        raise ctx.fail(f"mode '{attrs['mode']}' is not supported (only 'constant')")
    rank = x.example.ndim - ctx.offset
    if ctx.opset < 11:
        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
    else:
        pads, fill = ctx.const(1).tolist(), ctx.get(2)
        value = float(ctx.const(2).item()) if fill is not None else 0.0
        if ctx.get(3) is not None:
            axes, given = [a % rank for a in ctx.const(3).tolist()], pads
            pads = [0] * 2 * rank
            for j, axis in enumerate(axes):
                pads[axis], pads[rank + axis] = given[j], given[len(axes) + j]
    if not any(pads):
        ctx.set(x)
        return
    if ctx.offset == 0 and (pads[0] or pads[rank]):
        raise ctx.fail("padding the batch dimension is not supported")
    first = min(d for d in range(rank) if pads[d] or pads[rank + d])
    flat = [p for d in reversed(range(first, rank)) for p in (pads[d], pads[rank + d])]
    ctx.set(ctx.call_function(F.pad, x, tuple(flat), value=value))


def _op_flatten(ctx: _Ctx, node: onnx.NodeProto) -> None:
    axis, x = _attrs(node).get("axis", 1), ctx.get(0)
    if isinstance(x, torch.Tensor):
        axis %= x.ndim + 1
        ctx.set(x.reshape(math.prod(x.shape[:axis]), -1))
        return
    x = ctx.dyn(0)
    shape = ctx.onnx_shape(x)
    axis %= len(shape) + 1
    if ctx.offset:
        ctx.set(ctx.reshape(x, (math.prod(shape[:axis]), math.prod(shape[axis:]))))
    elif axis == 0 or math.prod(shape[1:axis]) == 1:
        ctx.set(ctx.call_module(nn.Flatten(), x))
    else:
        raise ctx.fail(f"axis={axis} would merge the batch dimension with others")


def _resolve(ctx: _Ctx, target: list[int | None], dims: list[int]) -> list[int]:
    """Resolve 0 (copy) and -1 (infer) in a per-sample target shape."""
    if None in target:
        raise ctx.fail("the batch size may only be the first entry of the target shape")
    out = [dims[i] if t == 0 else t for i, t in enumerate(target)]
    numel, known = math.prod(dims), math.prod(d for d in out if d != -1)
    if out.count(-1) == 1 and known and numel % known == 0:
        out[out.index(-1)] = numel // known
    if out.count(-1) or math.prod(out) != numel:
        raise ctx.fail(f"target shape {target} does not keep each sample's {numel} entries")
    return out


def _op_reshape(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs, x, shape = _attrs(node), ctx.get(0), ctx.get(1)
    if isinstance(shape, _Shape):
        target: list[int | None] = list(shape.dims)
    else:
        target = list(attrs["shape"]) if ctx.opset < 5 else ctx.const(1).tolist()
    if attrs.get("allowzero", 0) and 0 in target:
        raise ctx.fail("allowzero=1 with a zero in the shape is not supported")
    if isinstance(x, torch.Tensor):
        ctx.set(x.reshape(_resolve(ctx, target, list(x.shape))))
        return
    x = ctx.dyn(0)
    dims = ctx.onnx_shape(x)
    if ctx.offset == 0:
        head, target, dims = target[0], target[1:], dims[1:]
        if head not in (None, 0, -1, 1, ctx.batch):
            raise ctx.fail(f"first entry {head} of the target shape is not the batch size")
    ctx.set(ctx.reshape(x, _resolve(ctx, target, dims)))


def _op_transpose(ctx: _Ctx, node: onnx.NodeProto) -> None:
    x, perm = ctx.get(0), _attrs(node).get("perm")
    if isinstance(x, torch.Tensor):
        ctx.set(x.permute(perm or list(reversed(range(x.ndim)))))
        return
    x = ctx.dyn(0)
    rank = x.example.ndim - ctx.offset
    perm = list(perm or reversed(range(rank)))
    if ctx.offset == 0 and perm[0] != 0:
        raise ctx.fail("moving the batch dimension is not supported")
    full = perm if ctx.offset == 0 else [0, *(p + 1 for p in perm)]
    ctx.set(ctx.call_function(torch.permute, x, tuple(full)))


def _axes(ctx: _Ctx, node: onnx.NodeProto) -> list[int] | None:
    if ctx.opset >= 13:
        return None if ctx.get(1) is None else ctx.const(1).tolist()
    axes = _attrs(node).get("axes")
    return None if axes is None else list(axes)


def _op_squeeze(ctx: _Ctx, node: onnx.NodeProto) -> None:
    x, axes = ctx.get(0), _axes(ctx, node)
    if isinstance(x, _Shape) and x.dims and len(x.dims) == 1 and axes in (None, [0], [-1]):
        ctx.set(_Shape(x.dims, scalar=True))
        return
    shape = list(x.shape) if isinstance(x, torch.Tensor) else ctx.onnx_shape(ctx.dyn(0))
    axes = (
        [a % len(shape) for a in axes]
        if axes is not None
        else [a for a, d in enumerate(shape) if d == 1]
    )
    if any(shape[a] != 1 for a in axes):
        raise ctx.fail(f"cannot squeeze axes {axes} of shape {shape}")
    out = [d for a, d in enumerate(shape) if a not in axes]
    _set_reshaped(ctx, x, out, axes, "squeezing the batch dimension")


def _op_unsqueeze(ctx: _Ctx, node: onnx.NodeProto) -> None:
    x, axes = ctx.get(0), _axes(ctx, node) or []
    if isinstance(x, _Shape):
        if not x.scalar or axes not in ([0], [-1]):
            raise ctx.fail("only a scalar shape entry can be unsqueezed")
        ctx.set(_Shape(x.dims))
        return
    shape = list(x.shape) if isinstance(x, torch.Tensor) else ctx.onnx_shape(ctx.dyn(0))
    rank = len(shape) + len(axes)
    axes = sorted(a % rank for a in axes)
    for a in axes:
        shape.insert(a, 1)
    _set_reshaped(ctx, x, shape, axes, "inserting an axis before the batch dimension")


def _set_reshaped(ctx: _Ctx, x, shape: list[int], axes: list[int], what: str) -> None:
    """The output of a squeeze / unsqueeze: ``x`` (a constant, or the input-dependent value)
    reshaped to ``shape``; an axis 0 among ``axes`` of the input-dependent value is its batch."""
    if isinstance(x, torch.Tensor):
        ctx.set(x.reshape(shape))
    elif ctx.offset == 0 and 0 in axes:
        raise ctx.fail(f"{what} is not supported")
    else:
        ctx.set(ctx.reshape(ctx.dyn(0), shape[1 - ctx.offset :]))


def _op_concat(ctx: _Ctx, node: onnx.NodeProto) -> None:
    values, axis = [ctx.get(i) for i in range(len(node.input))], _attrs(node)["axis"]
    if all(isinstance(v, torch.Tensor) for v in values):
        ctx.set(torch.cat(values, axis))
    elif any(isinstance(v, _Shape) for v in values):
        dims: list[int | None] = []
        for v in values:
            if isinstance(v, torch.Tensor) and v.ndim == 1 and not v.is_floating_point():
                dims += v.tolist()
            elif isinstance(v, _Shape) and not v.scalar:
                dims += v.dims
            else:
                raise ctx.fail("mixing shape values with other tensors is not supported")
        ctx.set(_shape_value(dims))
    elif all(isinstance(v, _Dyn) for v in values):
        ctx.set(ctx.call_function(torch.cat, list(values), ctx.dim(values[0], axis)))
    else:
        raise ctx.fail("concatenating constants with non-constant tensors is not supported")


def _op_gather(ctx: _Ctx, node: onnx.NodeProto) -> None:
    data, index, axis = ctx.get(0), ctx.const(1), _attrs(node).get("axis", 0)
    if isinstance(data, torch.Tensor):
        ctx.set(_tensor(np.take(data.numpy(), index.numpy(), axis=axis)))
    elif isinstance(data, _Shape):
        picked = np.take(np.array(data.dims, dtype=object), index.numpy(), axis=0)
        ctx.set(_shape_value(np.atleast_1d(picked).tolist(), scalar=index.ndim == 0))
    else:
        x = ctx.dyn(0)
        dim = ctx.dim(x, axis)
        index = index % x.example.shape[dim]
        if index.ndim == 0:
            ctx.set(ctx.call_function(torch.select, x, dim, int(index)))
        elif index.ndim == 1:
            ctx.set(ctx.call_function(torch.index_select, x, dim, index))
        else:
            raise ctx.fail("indices of rank > 1 are not supported")


def _op_shape(ctx: _Ctx, node: onnx.NodeProto) -> None:
    attrs, x = _attrs(node), ctx.get(0)
    if isinstance(x, torch.Tensor):
        dims: list[int | None] = list(x.shape)
    else:
        x = ctx.dyn(0)
        dims = [None, *x.example.shape[1:]] if ctx.offset == 0 else ctx.onnx_shape(x)
    ctx.set(_shape_value(dims[attrs.get("start", 0) : attrs.get("end")]))


def _op_cast(ctx: _Ctx, node: onnx.NodeProto) -> None:
    x, dtype = ctx.get(0), np.dtype(helper.tensor_dtype_to_np_dtype(_attrs(node)["to"]))
    if isinstance(x, torch.Tensor):
        ctx.set(_tensor(x.numpy().astype(dtype)))
    elif (dtype.kind == "f") == isinstance(x, _Dyn):  # float tensors, integer shapes: no-op
        ctx.set(x)
    else:
        raise ctx.fail(f"cast to {dtype} is not supported")


def _op_softmax(ctx: _Ctx, node: onnx.NodeProto) -> None:
    x = ctx.dyn(0)
    rank = x.example.ndim - ctx.offset
    axis = _attrs(node).get("axis", -1 if ctx.opset >= 13 else 1)
    if ctx.opset < 13 and axis % rank != rank - 1:
        raise ctx.fail("before opset 13, only the last axis is supported")
    ctx.set(ctx.call_module(nn.Softmax(dim=ctx.dim(x, axis)), x))


_HANDLERS: dict[str, _Handler] = {
    "Add": _op_arith,
    "AveragePool": _op_pool,
    "BatchNormalization": _op_batchnorm,
    "Cast": _op_cast,
    "Concat": _op_concat,
    "Constant": _op_constant,
    "Conv": _op_conv,
    "Div": _op_arith,
    "Dropout": _op_alias,
    "Flatten": _op_flatten,
    "Gather": _op_gather,
    "Gemm": _op_gemm,
    "GlobalAveragePool": _op_global_pool,
    "GlobalMaxPool": _op_global_pool,
    "Identity": _op_alias,
    "LeakyRelu": _unary(lambda a: nn.LeakyReLU(a.get("alpha", 0.01))),
    "MatMul": _op_matmul,
    "MaxPool": _op_pool,
    "Mul": _op_arith,
    "Pad": _op_pad,
    "Relu": _unary(lambda a: nn.ReLU()),
    "Reshape": _op_reshape,
    "Shape": _op_shape,
    "Sigmoid": _unary(lambda a: nn.Sigmoid()),
    "Softmax": _op_softmax,
    "Squeeze": _op_squeeze,
    "Sub": _op_arith,
    "Tanh": _unary(lambda a: nn.Tanh()),
    "Transpose": _op_transpose,
    "Unsqueeze": _op_unsqueeze,
}

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(_HANDLERS))


def _dims(info: onnx.ValueInfoProto) -> list[int | None]:
    dims = info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def onnx_to_torch(proto: onnx.ModelProto) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """Convert an ONNX model to an eval-mode float32 GraphModule; also return the sample shape."""
    graph = proto.graph
    inits = {t.name: _tensor(numpy_helper.to_array(t)) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise RobustlabError(
            f"expected an ONNX model with one input and one output, found inputs "
            f"{[i.name for i in inputs]} and outputs {[o.name for o in graph.output]}"
        )
    dims = _dims(inputs[0])
    offset = 1 if len(dims) == 1 else 0
    sample = dims[1 - offset :]
    if not dims or any(d is None for d in sample):
        raise RobustlabError(
            f"ONNX input '{inputs[0].name}' has shape {dims}; all but the batch must be fixed"
        )
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    uses = Counter(name for node in graph.node for name in node.input)
    uses.update(o.name for o in graph.output)
    ctx = _Ctx(opset, offset, None if offset else dims[0], uses)
    for name, value in inits.items():
        ctx.values[name] = value
        ctx.const_names[id(value)] = name
    placeholder = ctx.graph.placeholder(_ident(inputs[0].name, "x"))
    ctx.values[inputs[0].name] = _Dyn(placeholder, torch.zeros(1, *sample))
    for index, node in enumerate(graph.node):
        label = node.name or (node.output[0] if node.output else f"{node.op_type}_{index}")
        if node.domain not in ("", "ai.onnx") or node.op_type not in _HANDLERS:
            raise UnsupportedOperation(
                f"ONNX operation '{node.op_type}' at node '{label}' is not supported; "
                f"supported: {', '.join(SUPPORTED_OPS)}"
            )
        ctx.begin(node, label)
        _HANDLERS[node.op_type](ctx, node)
        for i, name in enumerate(node.output):
            if name and name not in ctx.values and uses[name]:
                raise ctx.fail(f"output {i} ('{name}') is not supported")
    result = ctx.values.get(graph.output[0].name)
    if not isinstance(result, _Dyn):
        raise RobustlabError(f"ONNX output '{graph.output[0].name}' does not depend on the input")
    ctx.graph.output(result.node)
    module = fx.GraphModule(ctx.root, ctx.graph, class_name="OnnxModel")
    return module.float().eval(), tuple(int(d) for d in sample)

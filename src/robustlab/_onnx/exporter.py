"""torch.fx -> ONNX for the operations robustlab's own models use."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from robustlab.errors import RobustlabError, UnsupportedOperation


class _Batch:
    """The runtime batch size, as it appears in traced shape arithmetic."""

    def __repr__(self) -> str:
        return "<batch>"


_BATCH = _Batch()


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} at '{node.target}'"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    module = (getattr(node.target, "__module__", None) or "").lstrip("_")
    name = getattr(node.target, "__name__", repr(node.target))
    return f"{module}.{name}" if module else name


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


class _Exporter:
    """State of one export: ONNX nodes and initializers, and what each fx node stands for."""

    def __init__(self, gm: fx.GraphModule, opset: int) -> None:
        self.gm, self.opset = gm, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.taken: set[str] = {"input", "output"}
        self.env: dict[fx.Node, Any] = {}
        self.node: fx.Node = next(iter(gm.graph.nodes))

    def fail(self, why: str) -> UnsupportedOperation:
        desc = _describe(self.gm, self.node)
        return UnsupportedOperation(f"cannot export node '{self.node.name}' ({desc}): {why}")

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def const(self, value: Any, base: str, dtype: type = np.float32) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def emit(self, op: str, inputs: list[str], suffix: str = "", **attrs: Any) -> str:
        out = self.fresh(self.node.name + suffix)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def value(self, arg: Any) -> Any:
        return self.env[arg] if isinstance(arg, fx.Node) else arg

    def tensor(self, arg: Any) -> str:
        """The ONNX name of a tensor argument; Python numbers become scalar initializers."""
        value = self.value(arg)
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.const(float(value), f"{self.node.name}_scalar")
        raise self.fail(f"argument {value!r} is not a tensor")

    def shape(self, node: fx.Node) -> list[int]:
        return list(node.meta["tensor_meta"].shape)


_ExportModule = Callable[[_Exporter, fx.Node, Any, str], Any]
_ExportFunction = Callable[[_Exporter, fx.Node], Any]


def _ex_linear(ex: _Exporter, node: fx.Node, m: nn.Linear, x: str) -> str:
    bias = [] if m.bias is None else [ex.const(m.bias, f"{node.target}.bias")]
    if len(ex.shape(node.args[0])) == 2:
        return ex.emit("Gemm", [x, ex.const(m.weight, f"{node.target}.weight"), *bias], transB=1)
    y = ex.emit("MatMul", [x, ex.const(m.weight.T, f"{node.target}.weight_t")], "_matmul")
    return ex.emit("Add", [y, *bias]) if bias else y


def _ex_conv(ex: _Exporter, node: fx.Node, m: nn.Conv2d, x: str) -> str:
    if m.padding_mode != "zeros":
        raise ex.fail(f"padding_mode '{m.padding_mode}' is not supported")
    total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
    if m.padding == "valid":
        pads = [0] * 2 * len(total)
    elif m.padding == "same":
        pads = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        pads = list(m.padding) * 2
    inputs = [x, ex.const(m.weight, f"{node.target}.weight")]
    if m.bias is not None:
        inputs.append(ex.const(m.bias, f"{node.target}.bias"))
    return ex.emit(
        "Conv", inputs, kernel_shape=list(m.kernel_size), strides=list(m.stride), pads=pads,
        dilations=list(m.dilation), group=m.groups,
    )  # fmt: skip


def _ex_batchnorm(ex: _Exporter, node: fx.Node, m: nn.BatchNorm2d, x: str) -> str:
    if m.training or m.running_mean is None or m.running_var is None:
        raise ex.fail("batch normalisation needs eval mode and running statistics")
    ones = torch.ones(m.num_features)
    stats = {
        "weight": m.weight if m.affine else ones,
        "bias": m.bias if m.affine else 0 * ones,
        "running_mean": m.running_mean,
        "running_var": m.running_var,
    }
    names = [ex.const(v, f"{node.target}.{k}") for k, v in stats.items()]
    return ex.emit("BatchNormalization", [x, *names], epsilon=float(m.eps))


def _ex_pool(ex: _Exporter, node: fx.Node, m: nn.Module, x: str) -> str:
    nd = len(ex.shape(node.args[0])) - 2

    def tup(v: Any) -> list[int]:
        return list(v) if isinstance(v, (tuple, list)) else [v] * nd

    kernel = tup(m.kernel_size)
    attrs = {"kernel_shape": kernel, "strides": tup(m.stride or m.kernel_size)}
    attrs.update(pads=tup(m.padding) * 2, ceil_mode=int(m.ceil_mode))
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        if m.return_indices:
            raise ex.fail("return_indices=True is not supported")
        return ex.emit("MaxPool", [x], dilations=tup(m.dilation), **attrs)
    if getattr(m, "divisor_override", None):
        raise ex.fail("divisor_override is not supported")
    return ex.emit("AveragePool", [x], count_include_pad=int(m.count_include_pad), **attrs)


def _ex_global_pool(ex: _Exporter, node: fx.Node, m: nn.Module, x: str) -> str:
    size = m.output_size if isinstance(m.output_size, (tuple, list)) else [m.output_size]
    if any(s != 1 for s in size):
        raise ex.fail("only output size 1 is supported")
    average = isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d))
    return ex.emit("GlobalAveragePool" if average else "GlobalMaxPool", [x])


def _ex_softmax(ex: _Exporter, node: fx.Node, dim: int | None, x: str) -> str:
    rank = len(ex.shape(node.args[0]))
    if dim is None or dim % rank == 0:
        raise ex.fail("softmax needs an explicit dimension other than the batch")
    if ex.opset < 13 and dim % rank != rank - 1:
        raise ex.fail("before opset 13, only softmax over the last dimension is supported")
    return ex.emit("Softmax", [x], axis=dim % rank)


def _ex_flatten(ex: _Exporter, node: fx.Node, start: int, end: int, x: str) -> str:
    rank = len(ex.shape(node.args[0]))
    start, end = start % rank, end % rank
    if start == 0:
        raise ex.fail("flattening the batch dimension is not supported")
    if start == 1 and end == rank - 1:
        return ex.emit("Flatten", [x], axis=1)
    target = [0, *ex.shape(node)[1:]]
    return ex.emit("Reshape", [x, ex.const(target, f"{node.name}_shape", np.int64)])


def _alias(ex: _Exporter, node: fx.Node, m: Any, x: str) -> str:
    return x


_MODULE_EXPORTS: dict[type, _ExportModule] = {
    nn.Linear: _ex_linear,
    nn.Conv1d: _ex_conv,
    nn.Conv2d: _ex_conv,
    nn.Conv3d: _ex_conv,
    nn.ReLU: lambda ex, n, m, x: ex.emit("Relu", [x]),
    nn.LeakyReLU: lambda ex, n, m, x: ex.emit("LeakyRelu", [x], alpha=float(m.negative_slope)),
    nn.Sigmoid: lambda ex, n, m, x: ex.emit("Sigmoid", [x]),
    nn.Tanh: lambda ex, n, m, x: ex.emit("Tanh", [x]),
    nn.Softmax: lambda ex, n, m, x: _ex_softmax(ex, n, m.dim, x),
    nn.Flatten: lambda ex, n, m, x: _ex_flatten(ex, n, m.start_dim, m.end_dim, x),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _ex_batchnorm),
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _ex_pool),
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _ex_pool),
    **dict.fromkeys(
        (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _ex_global_pool
    ),
    **dict.fromkeys(
        (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), _ex_global_pool
    ),
    **dict.fromkeys(
        (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout),
        _alias,
    ),
}


def _ex_binary(op: str, python: Callable[[Any, Any], Any]) -> _ExportFunction:
    def handler(ex: _Exporter, node: fx.Node) -> Any:
        extra = {
            k: v
            for k, v in node.kwargs.items()
            if (k, v) not in (("alpha", 1), ("rounding_mode", None))
        }
        if len(node.args) != 2 or extra:
            raise ex.fail(f"extra arguments {extra or node.args[2:]} are not supported")
        a, b = (ex.value(arg) for arg in node.args)
        if isinstance(a, str) or isinstance(b, str):
            return ex.emit(op, [ex.tensor(node.args[0]), ex.tensor(node.args[1])])
        if _BATCH in (a, b):
            raise ex.fail("arithmetic on the batch size is not supported")
        return python(a, b)  # static shape arithmetic, e.g. x.size(1) * x.size(2)

    return handler


def _ex_unary(op: str) -> _ExportFunction:
    return lambda ex, node: ex.emit(op, [ex.tensor(node.args[0])])


def _ex_reshape(ex: _Exporter, node: fx.Node) -> str:
    rest = list(node.args[1:]) or [node.kwargs["shape"]]
    if len(rest) == 1 and isinstance(ex.value(rest[0]), (tuple, list)):
        rest = list(ex.value(rest[0]))
    target = [ex.value(d) for d in rest]
    if _BATCH in target[1:] or not all(isinstance(d, int) or d is _BATCH for d in target):
        raise ex.fail(f"shape {target} is not static apart from a leading batch size")
    target = [0 if d is _BATCH else d for d in target]
    if 0 in target[1:]:
        raise ex.fail("a zero-size dimension is not supported")
    shape = ex.const(target, f"{node.name}_shape", np.int64)
    return ex.emit("Reshape", [ex.tensor(node.args[0]), shape])


def _ex_size(ex: _Exporter, node: fx.Node) -> Any:
    shape = [_BATCH, *ex.shape(node.args[0])[1:]]
    dim = _arg(node, 1, "dim")
    return tuple(shape) if dim is None else shape[dim]


def _ex_getattr(ex: _Exporter, node: fx.Node) -> Any:
    if node.args[1] != "shape":
        raise ex.fail(f"attribute '{node.args[1]}' is not supported")
    return tuple([_BATCH, *ex.shape(node.args[0])[1:]])


def _ex_getitem(ex: _Exporter, node: fx.Node) -> Any:
    container, index = ex.value(node.args[0]), ex.value(node.args[1])
    if not isinstance(container, tuple):
        raise ex.fail("indexing a tensor is not supported")
    return container[index]


def _ex_flatten_fn(ex: _Exporter, node: fx.Node) -> str:
    start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
    return _ex_flatten(ex, node, start, end, ex.tensor(node.args[0]))


def _ex_leaky_relu(ex: _Exporter, node: fx.Node) -> str:
    alpha = float(_arg(node, 1, "negative_slope", 0.01))
    return ex.emit("LeakyRelu", [ex.tensor(node.args[0])], alpha=alpha)


def _ex_softmax_fn(ex: _Exporter, node: fx.Node) -> str:
    return _ex_softmax(ex, node, _arg(node, 1, "dim"), ex.tensor(node.args[0]))


def _ex_pad(ex: _Exporter, node: fx.Node) -> str:
    pad, mode = list(_arg(node, 1, "pad")), _arg(node, 2, "mode", "constant")
    value = _arg(node, 3, "value") or 0.0
    if mode != "constant":
        raise ex.fail(f"mode '{mode}' is not supported")
    rank = len(ex.shape(node.args[0]))
    pads = [0] * 2 * rank
    for j in range(len(pad) // 2):
        pads[rank - 1 - j], pads[2 * rank - 1 - j] = pad[2 * j], pad[2 * j + 1]
    inputs = [ex.tensor(node.args[0]), ex.const(pads, f"{node.name}_pads", np.int64)]
    return ex.emit("Pad", [*inputs, ex.const(float(value), f"{node.name}_value")], mode="constant")


def _ex_permute(ex: _Exporter, node: fx.Node) -> str:
    dims = node.args[1:] if node.op == "call_method" else _arg(node, 1, "dims")
    dims = list(dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims)
    return ex.emit("Transpose", [ex.tensor(node.args[0])], perm=dims)


def _ex_cat(ex: _Exporter, node: fx.Node) -> str:
    parts, dim = [ex.tensor(t) for t in node.args[0]], _arg(node, 1, "dim", 0)
    return ex.emit("Concat", parts, axis=dim % len(ex.shape(node)))


def _ex_gather(ex: _Exporter, node: fx.Node) -> str:
    x, dim, index = node.args[0], _arg(node, 1, "dim"), ex.value(_arg(node, 2, "index"))
    if isinstance(index, int):
        index = ex.const(index, f"{node.name}_index", np.int64)
    return ex.emit("Gather", [ex.tensor(x), index], axis=dim % len(ex.shape(x)))


def _ex_mean(ex: _Exporter, node: fx.Node) -> str:
    """``x.mean(dim, keepdim)`` over non-batch dimensions: ReduceMean (axes an input from opset
    18, an attribute before)."""
    x, dim, keep = node.args[0], _arg(node, 1, "dim"), bool(_arg(node, 2, "keepdim", False))
    rank = len(ex.shape(x))
    dims = [dim] if isinstance(dim, int) else list(dim or [])
    axes = sorted(d % rank for d in dims)
    if not axes or 0 in axes:
        raise ex.fail("only a mean over explicit non-batch dimensions is supported")
    if ex.opset >= 18:
        axes_in = ex.const(axes, f"{node.name}_axes", np.int64)
        return ex.emit("ReduceMean", [ex.tensor(x), axes_in], keepdims=int(keep))
    return ex.emit("ReduceMean", [ex.tensor(x)], axes=axes, keepdims=int(keep))


_FUNCTION_EXPORTS: dict[Any, _ExportFunction] = {
    **dict.fromkeys((operator.add, torch.add, "add"), _ex_binary("Add", operator.add)),
    **dict.fromkeys((operator.sub, torch.sub, "sub"), _ex_binary("Sub", operator.sub)),
    **dict.fromkeys((operator.mul, torch.mul, "mul"), _ex_binary("Mul", operator.mul)),
    **dict.fromkeys((operator.truediv, torch.div, "div"), _ex_binary("Div", operator.truediv)),
    **dict.fromkeys((F.relu, torch.relu, "relu"), _ex_unary("Relu")),
    **dict.fromkeys((torch.sigmoid, "sigmoid"), _ex_unary("Sigmoid")),
    **dict.fromkeys((torch.tanh, "tanh"), _ex_unary("Tanh")),
    **dict.fromkeys((torch.sqrt, "sqrt"), _ex_unary("Sqrt")),
    **dict.fromkeys((torch.log, "log"), _ex_unary("Log")),
    **dict.fromkeys((torch.exp, "exp"), _ex_unary("Exp")),
    **dict.fromkeys((operator.pow, torch.pow, "pow"), _ex_binary("Pow", operator.pow)),
    **dict.fromkeys((torch.mean, "mean"), _ex_mean),
    **dict.fromkeys((torch.flatten, "flatten"), _ex_flatten_fn),
    **dict.fromkeys((torch.reshape, "reshape", "view"), _ex_reshape),
    **dict.fromkeys((torch.softmax, F.softmax, "softmax"), _ex_softmax_fn),
    **dict.fromkeys((torch.permute, "permute"), _ex_permute),
    **dict.fromkeys(
        (torch.matmul, operator.matmul, "matmul"), _ex_binary("MatMul", operator.matmul)
    ),
    **dict.fromkeys((torch.select, torch.index_select), _ex_gather),
    F.leaky_relu: _ex_leaky_relu,
    F.pad: _ex_pad,
    torch.cat: _ex_cat,
    "contiguous": lambda ex, node: ex.tensor(node.args[0]),
    "size": _ex_size,
    getattr: _ex_getattr,
    operator.getitem: _ex_getitem,
}


def _ir_version(opset: int) -> int:
    """The lowest IR version that supports an opset, so older runtimes load the model."""
    return min(row[1] for row in helper.VERSION_TABLE if row[2] >= opset)


def torch_to_onnx(
    module: nn.Module, input_shape: tuple[int, ...], *, opset: int = 17
) -> onnx.ModelProto:
    """Export a module, traced with torch.fx, to ONNX with input 'input' of shape [N, *shape]."""
    if not 11 <= opset <= onnx.defs.onnx_opset_version():
        raise RobustlabError(
            f"opset {opset} is not supported (11 to {onnx.defs.onnx_opset_version()})"
        )
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # tracing runs user code: any error means "cannot trace"
        raise UnsupportedOperation(f"torch.fx cannot trace the module: {exc}") from exc
    example = torch.zeros(2, *input_shape, dtype=next((p.dtype for p in gm.parameters()), None))
    with torch.no_grad():
        try:
            gm(example)
        except Exception as exc:
            raise RobustlabError(
                f"the module fails on an input of shape {list(example.shape)}: {exc}"
            ) from exc
        ShapeProp(gm).propagate(example)
    ex = _Exporter(gm, opset)
    result: Any = None
    for node in gm.graph.nodes:
        ex.node = node
        if node.op == "placeholder":
            if "input" in ex.env.values():
                raise RobustlabError("the module takes more than one input")
            ex.env[node] = "input"
        elif node.op == "get_attr":
            value = gm
            for part in node.target.split("."):
                value = getattr(value, part)
            ex.env[node] = ex.const(value, node.target) if torch.is_tensor(value) else value
        elif node.op == "call_module":
            module_ = gm.get_submodule(node.target)
            handler = _MODULE_EXPORTS.get(type(module_))
            if handler is None:
                raise ex.fail("not supported")
            ex.env[node] = handler(ex, node, module_, ex.tensor(node.args[0]))
        elif node.op in ("call_function", "call_method"):
            handler = _FUNCTION_EXPORTS.get(node.target)
            if handler is None:
                raise ex.fail("not supported")
            ex.env[node] = handler(ex, node)
        elif node.op == "output":
            result, out_shape = ex.value(node.args[0]), ex.shape(node.args[0])
    if not isinstance(result, str):
        raise RobustlabError("the module must return a single tensor")
    if result == "input" or result in {t.name for t in ex.inits}:
        ex.nodes.append(helper.make_node("Identity", [result], ["output"], name="output"))
    for onnx_node in ex.nodes:
        for names in (onnx_node.input, onnx_node.output):
            for i, name in enumerate(names):
                if name == result:
                    names[i] = "output"
    graph = helper.make_graph(
        ex.nodes,
        "robustlab",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["N", *out_shape[1:]])],
        initializer=ex.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="robustlab"
    )
    model.ir_version = _ir_version(opset)
    onnx.checker.check_model(model, full_check=True)
    return model

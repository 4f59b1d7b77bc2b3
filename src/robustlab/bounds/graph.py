"""A graph view of a model for the bound engines: ``torch.fx`` nodes folded into a list of
input-dependent operations with their per-sample shapes; constants are evaluated once."""

from __future__ import annotations

import math
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from robustlab.bounds.ops.activation import ReLU, SShaped
from robustlab.bounds.ops.base import Bounds, Op
from robustlab.bounds.ops.linear import Add, Affine, Cat, Conv, Generic, Linear, Reshape
from robustlab.bounds.ops.pool import MaxPool
from robustlab.errors import UnsupportedOperation

__all__ = ["Bounds", "BoundGraph", "Node", "build_graph", "trace"]


@dataclass(frozen=True)
class Node:
    """One input-dependent operation: ``op`` applied to earlier nodes ``inputs``."""

    name: str
    op: Op | None  # None for the network input
    inputs: tuple[int, ...]
    shape: tuple[int, ...]  # per sample


@dataclass(frozen=True)
class BoundGraph:
    """Nodes in topological order; node 0 is the input, the last node the output."""

    nodes: tuple[Node, ...]

    @property
    def output(self) -> int:
        return len(self.nodes) - 1


def trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model`` (an fx GraphModule is used as it is)."""
    if isinstance(model, fx.GraphModule):
        return model
    if not isinstance(model, nn.Sequential) and type(model) in _LEAF_TYPES:
        model = nn.Sequential(model)  # a single layer: trace it as a one-layer network
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOperation(
            f"cannot build a graph of {type(model).__name__} with torch.fx ({first}); "
            "bound engines need a traceable model without data-dependent control flow"
        ) from None


class _Var:
    """Marks an fx value that depends on the input: the graph node index and a concrete example."""

    def __init__(self, index: int, example: Tensor) -> None:
        self.index, self.example = index, example


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _avgpool_as_conv(m: nn.AvgPool2d) -> bool:
    """Whether average pooling is a convolution: padding counted, no ceil mode, no divisor."""
    return m.count_include_pad and not m.ceil_mode and m.divisor_override is None


def _module_op(m: nn.Module, x: _Var) -> Op:
    if isinstance(m, nn.Linear):
        return Linear(m.weight, m.bias)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            if isinstance(m.padding, str):
                pad = m._reversed_padding_repeated_twice  # "same": explicit symmetric padding
                if len(set(pad)) == 1:
                    return Conv(
                        m.weight,
                        m.bias,
                        m.stride,
                        (pad[0],) * (m.weight.dim() - 2),
                        m.dilation,
                        m.groups,
                    )
            raise UnsupportedOperation(
                f"{type(m).__name__} with padding {m.padding!r} / {m.padding_mode!r}"
            )
        return Conv(m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.ReLU):
        return ReLU()
    if isinstance(m, nn.LeakyReLU):
        return ReLU(slope=m.negative_slope)
    if isinstance(m, nn.Sigmoid):
        return SShaped("sigmoid")
    if isinstance(m, nn.Tanh):
        return SShaped("tanh")
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if m.training or m.running_mean is None:
            raise UnsupportedOperation(
                f"{type(m).__name__} in training mode (put the model in eval mode)"
            )
        # folded in float64 from the parameters (in their float32, the fold's rounding would
        # make the bounds describe a slightly different function)
        var, mean = m.running_var.detach().double(), m.running_mean.detach().double()
        scale = 1 / torch.sqrt(var + m.eps)
        if m.affine:
            scale = m.weight.detach().double() * scale
        shift = (m.bias.detach().double() if m.affine else 0.0) - mean * scale
        shape = (-1,) + (1,) * (x.example.dim() - 2)
        return Affine(scale.view(shape), shift.view(shape))
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
            raise UnsupportedOperation("MaxPool2d with dilation, ceil_mode or return_indices")
        return MaxPool(_pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding))
    if isinstance(m, nn.AvgPool2d) and _avgpool_as_conv(m):
        # a depthwise convolution with weights 1/k^2 (float64): rows keep their windows
        c, kernel = x.example.shape[1], _pair(m.kernel_size)
        weight = torch.full((c, 1, *kernel), 1.0 / math.prod(kernel), dtype=torch.float64)
        stride = _pair(m.stride if m.stride is not None else m.kernel_size)
        return Conv(weight, None, stride, _pair(m.padding), (1, 1), c)
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
        k = m.kernel_size
        return Generic(
            m, terms=math.prod(k if isinstance(k, tuple) else (k,) * (x.example.dim() - 2)) + 1
        )
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        return Generic(m)
    if isinstance(m, nn.Flatten):
        y = m(x.example)
        return Reshape(tuple(y.shape[1:]))
    raise UnsupportedOperation(f"no bound rule for {type(m).__name__}")


_LEAF_TYPES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
)
_ALIASES = (nn.Identity, nn.Dropout)
SUPPORTED = sorted(
    [t.__name__ for t in _LEAF_TYPES + _ALIASES]
    + [
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "relu",
        "sigmoid",
        "tanh",
        "flatten",
        "reshape",
        "view",
        "pad",
        "getitem",
        "size",
        "linear",
        "cat",
        "permute",
        "transpose",
    ]
)


def _elementwise_const(fn_name: str, a, b) -> Op:
    """``var op const`` or ``const op var`` as an Affine operation."""
    var_first = isinstance(a, _Var)
    c = b if var_first else a
    c = c.detach() if isinstance(c, Tensor) else float(c)
    if fn_name == "add":
        return Affine(1.0, c)
    if fn_name == "sub":
        return Affine(1.0, -c) if var_first else Affine(-1.0, c)
    if fn_name == "mul":
        return Affine(c, 0.0)
    if fn_name == "div" and var_first:
        return Affine(1.0 / c if isinstance(c, float) else 1.0 / c.double(), 0.0)
    raise UnsupportedOperation(f"{fn_name} with the input-dependent tensor as divisor")


_FUNCTIONS: dict[Callable, str] = {
    operator.add: "add",
    torch.add: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    torch.div: "div",
    operator.neg: "neg",
    torch.neg: "neg",
    torch.relu: "relu",
    nn.functional.relu: "relu",
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.flatten: "flatten",
    torch.reshape: "reshape",
    nn.functional.pad: "pad",
    operator.getitem: "getitem",
    nn.functional.linear: "linear",
    torch.cat: "cat",
    torch.permute: "permute",
    torch.transpose: "transpose",
    nn.functional.leaky_relu: "leaky_relu",
}
_METHODS = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "neg": "neg",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "flatten": "flatten",
    "view": "reshape",
    "reshape": "reshape",
    "size": "size",
    "permute": "permute",
    "transpose": "transpose",
    "contiguous": "identity",
}


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {node.target}"


def _concrete(v):
    return fx.node.map_aggregate(v, lambda a: a.example if isinstance(a, _Var) else a)


def build_graph(model: nn.Module, input_shape: tuple[int, ...]) -> BoundGraph:
    """Trace ``model`` and fold it into a BoundGraph for inputs of ``input_shape`` (per sample)."""
    gm = trace(model)
    example = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    nodes: list[Node] = [Node("input", None, (), tuple(input_shape))]
    env: dict[fx.Node, object] = {}
    params = dict(gm.named_parameters()) | dict(gm.named_buffers())

    def add(name: str, op: Op, inputs: list[_Var], value: Tensor) -> _Var:
        if value.dim() == 0 or value.shape[0] != example.shape[0]:
            raise UnsupportedOperation(f"operation at node '{name}' mixes the batch dimension")
        nodes.append(Node(name, op, tuple(v.index for v in inputs), tuple(value.shape[1:])))
        return _Var(len(nodes) - 1, value)

    result = None
    for node in gm.graph.nodes:
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "placeholder":
            env[node] = _Var(0, example)
            continue
        if node.op == "get_attr":
            env[node] = (
                params[node.target].detach() if node.target in params else _getattr(gm, node.target)
            )
            continue
        if node.op == "output":
            result = args[0]
            break
        flat_vars = _variables((args, kwargs))
        value = _run(gm, node, _concrete(args), _concrete(kwargs))
        if not flat_vars or not isinstance(value, Tensor):
            env[node] = value  # a constant, or a number from the input's shape such as x.size(1)
            continue
        op, inputs = _make_op(gm, node, args, kwargs, flat_vars)
        if op is None:  # an alias (identity, dropout, contiguous)
            env[node] = inputs[0]
            continue
        env[node] = add(node.name, op, inputs, value.detach())
    if not isinstance(result, _Var):
        raise UnsupportedOperation("the model output must be one tensor that depends on the input")
    if result.index != len(nodes) - 1:  # the output is not the last node: keep only its ancestors
        nodes = _prune(nodes, result.index)
    return BoundGraph(tuple(nodes))


def _variables(tree) -> list[_Var]:
    """The input-dependent values in a nested structure of fx arguments, in order."""
    found: list[_Var] = []
    fx.node.map_aggregate(tree, lambda a: found.append(a) if isinstance(a, _Var) else None)
    return found


def _prune(nodes: list[Node], out: int) -> list[Node]:
    keep, stack = set(), [out]
    while stack:
        i = stack.pop()
        if i not in keep:
            keep.add(i)
            stack.extend(nodes[i].inputs)
    order = sorted(keep)
    new = {old: k for k, old in enumerate(order)}
    return [
        Node(nodes[i].name, nodes[i].op, tuple(new[j] for j in nodes[i].inputs), nodes[i].shape)
        for i in order
    ]


def _getattr(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, Tensor) else obj


def _run(gm: fx.GraphModule, node: fx.Node, args, kwargs):
    with torch.no_grad():
        if node.op == "call_module":
            return gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)


def _make_op(gm, node, args, kwargs, flat_vars) -> tuple[Op | None, list[_Var]]:
    """The bound operation for an fx node with input-dependent operands ``flat_vars``."""
    desc = _describe(gm, node)
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, _ALIASES):
            return None, flat_vars
        if len(flat_vars) != 1 or not isinstance(args[0], _Var):
            raise UnsupportedOperation(f"module {desc} at node '{node.name}' with several inputs")
        try:
            return _module_op(m, args[0]), flat_vars
        except UnsupportedOperation as e:
            raise UnsupportedOperation(
                f"{e} at node '{node.name}'; supported: {', '.join(SUPPORTED)}"
            ) from None
    key = _FUNCTIONS.get(node.target) if node.op == "call_function" else _METHODS.get(node.target)
    if key is None:
        raise UnsupportedOperation(
            f"operation {desc} at node '{node.name}' has no bound rule; supported: {', '.join(SUPPORTED)}"
        )
    x = flat_vars[0]
    example_out = _run(gm, node, _concrete(args), _concrete(kwargs))
    if key == "identity":
        return None, flat_vars
    if key in ("add", "sub") and len(flat_vars) == 2:
        return Add(1.0 if key == "add" else -1.0), flat_vars
    if key in ("add", "sub", "mul", "div") and len(flat_vars) == 1 and len(args) == 2:
        return _elementwise_const(key, args[0], args[1]), flat_vars
    if key == "neg":
        return Affine(-1.0, 0.0), flat_vars
    if key == "relu" and len(flat_vars) == 1:
        return ReLU(), flat_vars
    if key == "leaky_relu":
        slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
        return ReLU(slope=float(slope)), flat_vars
    if key in ("sigmoid", "tanh"):
        return SShaped(key), flat_vars
    if key in ("flatten", "reshape"):
        return Reshape(tuple(example_out.shape[1:])), flat_vars
    if key == "linear" and len(flat_vars) == 1 and args[0] is x:
        w = args[1] if len(args) > 1 else kwargs["weight"]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        return Linear(w, b), flat_vars
    if key in ("pad", "getitem", "permute", "transpose") and len(flat_vars) == 1:
        if key == "pad":
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            value = kwargs.get("value", args[3] if len(args) > 3 else 0.0)
            if mode != "constant" or (value or 0.0) != 0.0:
                raise UnsupportedOperation(
                    f"pad with mode={mode!r}, value={value!r} at node '{node.name}'"
                )
        const_args = args[1:]
        fn = _bind(gm, node, const_args, kwargs)
        return Generic(fn, terms=None if key == "getitem" else 0), flat_vars
    if key == "cat" and all(isinstance(a, _Var) for a in args[0]):
        parts = list(args[0])
        ndim = parts[0].example.dim()
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        dim = dim + ndim if dim < 0 else dim
        if dim == 0:
            raise UnsupportedOperation(f"cat along the batch dimension at node '{node.name}'")
        sizes = tuple(int(v.example.shape[dim]) for v in parts)
        return Cat(dim - 1, sizes, len(parts)), parts
    raise UnsupportedOperation(
        f"operation {desc} at node '{node.name}' with these operands has no bound rule; "
        f"supported: {', '.join(SUPPORTED)}"
    )


def _bind(gm, node, const_args, kwargs):
    """A function of one tensor applying ``node`` with its constant arguments."""
    if node.op == "call_function":
        return lambda t: node.target(t, *const_args, **kwargs)
    return lambda t: getattr(t, node.target)(*const_args, **kwargs)


_graph_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graph_of(model: nn.Module, input_shape: tuple[int, ...]) -> BoundGraph:
    """``build_graph`` cached per model and input shape (the graph holds the live parameters)."""
    per_model = _graph_cache.setdefault(model, {})
    key = tuple(input_shape)
    if key not in per_model:
        per_model[key] = build_graph(model, key)
    return per_model[key]

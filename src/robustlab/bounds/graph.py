"""A graph view of a model for the bound engines: ``torch.fx`` nodes folded into a list of
input-dependent operations with their per-sample shapes; constants are evaluated once."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, fx, nn

from robustlab.bounds import rules
from robustlab.bounds import rules_attention as attention
from robustlab.bounds.calls import FUNCTIONS as _FUNCTIONS
from robustlab.bounds.calls import METHODS as _METHODS
from robustlab.bounds.ops.activation import ReLU, SShaped
from robustlab.bounds.ops.base import Bounds, Op
from robustlab.bounds.ops.linear import Add, Affine, Conv, Generic, Linear, Reshape
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.plan import compile_plan
from robustlab.bounds.rules import Call
from robustlab.bounds.rules import Var as _Var
from robustlab.bounds.tracker import graph_covered
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

    @cached_property
    def plan(self):
        """The compiled plan (plan.py): node kinds, input shapes, needed bounds; built once."""
        return compile_plan(self)

    @cached_property
    def float32_covered(self) -> bool:
        """Whether float32 passes bound their rounding on every operation (tracker.py); once."""
        return graph_covered(self)


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


def _module_rule(call: Call, m: nn.Module) -> _Var:
    """The single-input modules of ``_module_op``."""
    x = call.args[0] if call.args else None
    if len(call.vars) != 1 or not isinstance(x, _Var):
        raise UnsupportedOperation(
            f"module {type(m).__name__} at node '{call.name}' with several inputs"
        )
    return call.emit(_module_op(m, x), [x])


def _binary(key: str) -> Callable[[Call], object]:
    """add / sub / mul / div: of two input-dependent tensors, or with a constant (Affine)."""

    def rule(call: Call):
        if len(call.args) != 2 or call.kwargs:
            raise call.unsupported(f"{key} with extra arguments {call.kwargs or call.args[2:]}")
        a, b = call.args
        if key in ("add", "sub") and attention.masking(a, b):  # an additive attention mask
            return attention.masked_shift(call, 1.0 if key == "add" else -1.0)
        if isinstance(a, _Var) and isinstance(b, _Var):
            if key in ("add", "sub"):
                return call.emit(Add(1.0 if key == "add" else -1.0), [a, b])
            return rules.product(call, a, b) if key == "mul" else rules.quotient(call, a, b)
        if key == "div" and isinstance(b, _Var):
            return rules.quotient(call, a, b)
        return call.emit(_elementwise_const(key, a, b), call.vars)

    return rule


def _leaky_relu(call: Call) -> _Var:
    slope = call.arg(1, "negative_slope", 0.01)
    return call.emit(ReLU(slope=float(slope)), [call.vars[0]])


def _reshape(call: Call) -> _Var:
    return call.emit(Reshape(tuple(call.out.shape[1:])), [call.vars[0]])


def _linear(call: Call) -> _Var:
    x = call.args[0]
    if len(call.vars) != 1 or x is not call.vars[0]:
        raise call.unsupported("linear with an input-dependent weight or bias")
    w = call.arg(1, "weight")
    b = call.arg(2, "bias")
    return call.emit(Linear(w, b), [x])


def _pad(call: Call) -> _Var:
    mode = call.arg(2, "mode", "constant")
    value = call.arg(3, "value", 0.0)
    if mode != "constant" or (value or 0.0) != 0.0:
        raise call.unsupported(f"pad with mode={mode!r}, value={value!r}")
    return rules.shaped(call, "pad")


def _getitem(call: Call):
    seq, index = call.args
    if isinstance(seq, (tuple, list)):  # an element of a tuple of values (split, attention)
        return seq[index]
    return rules.shaped(call, "getitem")


def _cat(call: Call) -> _Var:
    return rules.concatenate(call, list(call.args[0]), call.arg(1, "dim", 0))


def _alias(call: Call):
    if call.out.dtype not in (torch.float32, torch.float64):  # int / bool / half casts round
        raise call.unsupported(f"{call.node.target} to {call.out.dtype}")
    # the same node, with the cast example: the operations after it see the dtype they expect
    # (a float64 network behind an input cast: its float64 weights meet a float64 example)
    x = call.vars[0]
    if not isinstance(call.out, Tensor):
        return x
    if isinstance(x, attention.Masked):
        inner = _Var(x.inner.index, x.inner.example.to(call.out.dtype))
        return attention.Masked(inner, x.keep, call.out)
    return _Var(x.index, call.out)


def _dropout(call: Call):
    if call.arg(2, "training", True):
        raise call.unsupported("dropout in training mode")
    return call.vars[0]


def _attribute(call: Call):
    if call.args[1] != "mT":
        raise call.unsupported(f"attribute {call.args[1]!r} of an input-dependent tensor")
    return rules.shaped(call, "mT")


def _max_min(upper: bool) -> Callable[[Call], object]:
    """``torch.max(a, b)`` / ``torch.min(a, b)``: elementwise; the reductions are refused."""
    pair = rules.extremum(upper)

    def rule(call: Call):
        if len(call.args) == 2 and isinstance(call.args[1], (_Var, Tensor)):
            return pair(call)
        raise call.unsupported("max / min over a dimension (use amax / amin)")

    return rule


def _hardtanh(call: Call) -> _Var:
    lo, hi = call.arg(1, "min_val", -1.0), call.arg(2, "max_val", 1.0)
    return call.emit(rules.Clamp(float(lo), float(hi)), [call.vars[0]])


def _relu6(call: Call) -> _Var:
    return call.emit(rules.Clamp(0.0, 6.0), [call.vars[0]])


# One table per kind of fx target; SUPPORTED and the modules kept as leaves derive from them.
_MODULES: dict[type, Callable[[Call, nn.Module], object]] = {
    **dict.fromkeys(
        (
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
        ),
        _module_rule,
    ),
    nn.ConvTranspose1d: rules.conv_transpose_module,
    nn.ConvTranspose2d: rules.conv_transpose_module,
    nn.Upsample: rules.upsample_module,
    nn.AdaptiveMaxPool1d: rules.global_max_module,
    nn.AdaptiveMaxPool2d: rules.global_max_module,
    nn.MaxPool1d: rules.max_pool1d_module,
    nn.LayerNorm: rules.layer_norm_module,
    nn.GELU: rules.gelu_module,
    nn.Softmax: attention.softmax_module,
    nn.LogSoftmax: attention.softmax_module,
    nn.Hardtanh: rules.clamp_module,
    nn.ReLU6: rules.clamp_module,
    nn.Unflatten: lambda call, m: rules.reshaped(call),
    nn.MultiheadAttention: attention.multihead_module,
    nn.TransformerEncoderLayer: attention.encoder_module,
    nn.TransformerEncoder: attention.encoder_module,
}
_ALIASES = (nn.Identity, nn.Dropout)
_LEAF_TYPES = tuple(_MODULES)

_CALLS: dict[str, Callable[[Call], object]] = {
    "add": _binary("add"),
    "sub": _binary("sub"),
    "mul": _binary("mul"),
    "div": _binary("div"),
    "neg": lambda call: call.emit(Affine(-1.0, 0.0), [call.vars[0]]),
    "relu": lambda call: call.emit(ReLU(), [call.vars[0]]),
    "leaky_relu": _leaky_relu,
    "sigmoid": lambda call: call.emit(SShaped("sigmoid"), [call.vars[0]]),
    "tanh": lambda call: call.emit(SShaped("tanh"), [call.vars[0]]),
    "reshape": _reshape,
    "pad": _pad,
    "getitem": _getitem,
    "linear": _linear,
    "cat": _cat,
    "stack": rules.stack,
    "permute": rules.shaped,
    "transpose": rules.shaped,
    "movedim": rules.shaped,
    "flip": rules.shaped,
    "expand": rules.shaped,
    "index_select": rules.shaped,
    "mT": _attribute,
    "squeeze": rules.reshaped,
    "unsqueeze": rules.reshaped,
    "split": rules.split,
    "identity": _alias,
    "dropout": _dropout,
    "matmul": rules.matmul,
    "sum": rules.reduction(mean=False),
    "mean": rules.reduction(mean=True),
    "amax": rules.extreme_reduction(1.0),
    "amin": rules.extreme_reduction(-1.0),
    "max": _max_min(True),
    "min": _max_min(False),
    "maximum": rules.extremum(True),
    "minimum": rules.extremum(False),
    "clamp": rules.clamp,
    "hardtanh": _hardtanh,
    "relu6": _relu6,
    "softmax": attention.softmax(log=False),
    "log_softmax": attention.softmax(log=True),
    "pow": rules.power,
    **{name: rules.unary(make) for name, make in rules.ELEMENTWISE.items()},
    "gelu": rules.gelu,
    "where": attention.where,
    "masked_fill": attention.masked_fill,
    "layer_norm": rules.layer_norm,
    "scaled_dot_product_attention": attention.attention,
    "interpolate": rules.interpolate,
}

# the modules that take masked scores (rules_attention.Masked: -inf at fixed places)
MASKED_MODULES = (nn.Softmax, *_ALIASES)

SUPPORTED = sorted({t.__name__ for t in _LEAF_TYPES + _ALIASES} | set(_CALLS))
assert set(_FUNCTIONS.values()) | set(_METHODS.values()) <= set(_CALLS)


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

    def add(name: str, op: Op, inputs: list[_Var]) -> _Var:
        with torch.no_grad():
            value = op.forward(*[v.example for v in inputs]).detach()
        if value.dim() == 0 or value.shape[0] != example.shape[0]:
            raise UnsupportedOperation(f"operation at node '{name}' mixes the batch dimension")
        if getattr(op, "node", None) == "":
            op.node = name  # named in the relaxation's error messages
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
        cargs, ckwargs = _concrete(args), _concrete(kwargs)
        if node.op == "call_module":  # masks of batch 1: the same for every sample
            m = gm.get_submodule(node.target)
            cargs, ckwargs = attention.one_mask_for_every_sample(m, cargs, ckwargs, len(example))
        value = _run(gm, node, cargs, ckwargs)
        if not flat_vars or not _has_tensor(value):
            env[node] = value  # a constant, or a number from the input's shape such as x.size(1)
            continue
        env[node] = _apply(gm, Call(node, args, kwargs, flat_vars, value, add))
    if not isinstance(result, _Var):
        raise UnsupportedOperation("the model output must be one tensor that depends on the input")
    if isinstance(result, attention.Masked):
        raise UnsupportedOperation(
            "the model output has -inf entries (a mask not followed by softmax)"
        )
    if result.example.dim() == 1:  # one number per sample: as a vector of one
        result = add(f"{nodes[result.index].name}.vector", Reshape((1,)), [result])
    if result.index != len(nodes) - 1:  # the output is not the last node: keep only its ancestors
        nodes = _prune(nodes, result.index)
    return BoundGraph(tuple(nodes))


def _has_tensor(value) -> bool:
    if isinstance(value, (tuple, list)):
        return any(isinstance(v, Tensor) for v in value)
    return isinstance(value, Tensor)


def _apply(gm: fx.GraphModule, call: Call):
    """Fold one fx node by its rule: the value it stands for (a Var, or a tuple of them)."""
    node = call.node
    desc = _describe(gm, node)
    if any(isinstance(v, attention.Masked) for v in call.vars):
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        table = _FUNCTIONS if node.op == "call_function" else _METHODS
        key = None if m is not None or not _hashable(node.target) else table.get(node.target)
        if not (isinstance(m, MASKED_MODULES) or key in attention.MASKED_CALLS):
            raise UnsupportedOperation(
                f"{desc} at node '{node.name}' on scores with -inf entries (an attention mask): "
                "only a softmax takes them, after adding constants"
            )
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, _ALIASES):
            return call.vars[0]
        rule = next((_MODULES[t] for t in type(m).__mro__ if t in _MODULES), None)
        if rule is None:
            raise UnsupportedOperation(
                f"no bound rule for {desc} at node '{node.name}'; supported: {', '.join(SUPPORTED)}"
            )
        try:
            return rule(call, m)
        except UnsupportedOperation as e:
            if f"'{node.name}'" in str(e):
                raise
            raise UnsupportedOperation(
                f"{e} at node '{node.name}'; supported: {', '.join(SUPPORTED)}"
            ) from None
    table = _FUNCTIONS if node.op == "call_function" else _METHODS
    key = table.get(node.target) if isinstance(node.target, str) or _hashable(node.target) else None
    if key is None:
        raise UnsupportedOperation(
            f"operation {desc} at node '{node.name}' has no bound rule; supported: {', '.join(SUPPORTED)}"
        )
    try:
        return _CALLS[key](call)
    except UnsupportedOperation as e:
        if "supported: " in str(e):
            raise
        raise UnsupportedOperation(f"{e}; supported: {', '.join(SUPPORTED)}") from None


def _hashable(v) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


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
    try:
        return _call(gm, node, args, kwargs)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOperation(
            f"{_describe(gm, node)} at node '{node.name}' fails on a batch of 2 samples ({first}); "
            "bounds take every sample alike: a constant operand (a mask) needs a batch dimension "
            "of 1 or none"
        ) from None


def _call(gm: fx.GraphModule, node: fx.Node, args, kwargs):
    with torch.no_grad():
        if node.op == "call_module":
            return gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)


_graph_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graph_of(model: nn.Module, input_shape: tuple[int, ...]) -> BoundGraph:
    """``build_graph`` cached per model and input shape (the graph holds the live parameters)."""
    per_model = _graph_cache.setdefault(model, {})
    key = tuple(input_shape)
    if key not in per_model:
        per_model[key] = build_graph(model, key)
    return per_model[key]

"""Interval bound propagation (Gowal et al. 2018, arXiv:1810.12715).

Bounds are computed in float64 and rounded outward to the input's dtype: they hold for exact
arithmetic on the model's weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

from robustlab.bounds.graph import Bounds, describe, node_key, trace
from robustlab.errors import UnsupportedOperation

Value = Bounds | Tensor | int | float | tuple


def _affine(
    b: Bounds, fn: Callable[[Tensor], Tensor], fn_abs: Callable[[Tensor], Tensor]
) -> Bounds:
    """Bounds of an affine map ``fn`` (linear part ``fn_abs`` applied to the radius)."""
    mid, rad = (b.upper + b.lower) / 2, (b.upper - b.lower) / 2
    c, r = fn(mid), fn_abs(rad)
    return Bounds(c - r, c + r)


def _linear(m: nn.Linear, b: Bounds) -> Bounds:
    return _linear_fn(b, m.weight, m.bias)


def _linear_fn(b: Bounds, weight: Tensor, bias: Tensor | None = None) -> Bounds:
    if isinstance(weight, Bounds) or isinstance(bias, Bounds):
        raise UnsupportedOperation("linear with a variable weight")
    w = weight.double()
    bias = bias.double() if bias is not None else None
    return _affine(
        b, lambda x: nn.functional.linear(x, w, bias), lambda r: nn.functional.linear(r, w.abs())
    )


def _conv(m: nn.Conv2d | nn.Conv1d, b: Bounds) -> Bounds:
    conv = nn.functional.conv2d if isinstance(m, nn.Conv2d) else nn.functional.conv1d
    if m.padding_mode != "zeros":
        raise UnsupportedOperation(f"{type(m).__name__} with padding_mode={m.padding_mode!r}")
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
    w = m.weight.double()
    bias = m.bias.double() if m.bias is not None else None
    return _affine(b, lambda x: conv(x, w, bias, **kw), lambda r: conv(r, w.abs(), None, **kw))


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, b: Bounds) -> Bounds:
    scale = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
    shift = m.bias.double() - m.running_mean.double() * scale
    shape = (1, -1) + (1,) * (b.lower.dim() - 2)
    s, t = scale.view(shape), shift.view(shape)
    return _affine(b, lambda x: x * s + t, lambda r: r * s.abs())


def _avgpool(m: nn.AvgPool2d, b: Bounds) -> Bounds:
    def f(x):
        return nn.functional.avg_pool2d(
            x,
            m.kernel_size,
            m.stride,
            m.padding,
            m.ceil_mode,
            m.count_include_pad,
            m.divisor_override,
        )

    return Bounds(f(b.lower), f(b.upper))


def _monotone(fn: Callable[[Tensor], Tensor]) -> Callable[[Bounds], Bounds]:
    return lambda b: Bounds(fn(b.lower), fn(b.upper))


def _shape_op(fn: Callable[..., Tensor]) -> Callable[..., Bounds]:
    return lambda b, *a, **k: Bounds(fn(b.lower, *a, **k), fn(b.upper, *a, **k))


def _const(v: Value) -> Tensor:
    return v.double() if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64)


def _add(a: Value, c: Value, sign: float = 1.0) -> Value:
    if isinstance(a, Bounds) and isinstance(c, Bounds):
        if sign > 0:
            return Bounds(a.lower + c.lower, a.upper + c.upper)
        return Bounds(a.lower - c.upper, a.upper - c.lower)
    if isinstance(a, Bounds):
        return Bounds(a.lower + sign * _const(c), a.upper + sign * _const(c))
    if isinstance(c, Bounds):
        return _add(_neg(c), a) if sign < 0 else _add(c, a)
    return a + sign * c


def _neg(a: Value) -> Value:
    return Bounds(-a.upper, -a.lower) if isinstance(a, Bounds) else -a


def _mul(a: Value, c: Value) -> Value:
    if isinstance(a, Bounds) and isinstance(c, Bounds):
        raise UnsupportedOperation("product of two variable tensors")
    if isinstance(c, Bounds):
        a, c = c, a
    if not isinstance(a, Bounds):
        return a * c
    k = _const(c)
    lo, hi = a.lower * k, a.upper * k
    return Bounds(torch.minimum(lo, hi), torch.maximum(lo, hi))


def _div(a: Value, c: Value) -> Value:
    if isinstance(c, Bounds):
        raise UnsupportedOperation("division by a variable tensor")
    return _mul(a, 1.0 / _const(c)) if isinstance(a, Bounds) else a / c


def _size(b: Value, *args) -> Value:
    return (b.lower if isinstance(b, Bounds) else b).size(*args)


def _getitem(a: Value, idx) -> Value:
    return Bounds(a.lower[idx], a.upper[idx]) if isinstance(a, Bounds) else a[idx]


MODULE_RULES: dict[str, Callable] = {
    "linear": _linear,
    "conv": _conv,
    "batchnorm": _batchnorm,
    "avgpool": _avgpool,
    "relu": lambda m, b: Bounds(b.lower.clamp_min(0), b.upper.clamp_min(0)),
    "flatten": lambda m, b: _shape_op(torch.flatten)(b, m.start_dim, m.end_dim),
    "identity": lambda m, b: b,
}
FUNCTION_RULES: dict[str, Callable] = {
    "relu": _monotone(torch.relu),
    "flatten": _shape_op(torch.flatten),
    "reshape": lambda b, *s: (
        _shape_op(torch.reshape)(b, s[0] if len(s) == 1 else s)
        if isinstance(b, Bounds)
        else b.reshape(*s)
    ),
    "linear": _linear_fn,
    "add": _add,
    "sub": lambda a, c: _add(a, c, -1.0),
    "mul": _mul,
    "div": _div,
    "neg": _neg,
    "size": _size,
    "getitem": _getitem,
    "pad": lambda b, pad, mode="constant", value=0.0: _shape_op(nn.functional.pad)(
        b, pad, mode, value
    ),
}
SUPPORTED = sorted(set(MODULE_RULES) | set(FUNCTION_RULES))


def _get_attr(gm: nn.Module, target: str) -> Tensor:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach()


def _outward(b: Bounds, dtype: torch.dtype) -> Bounds:
    lo, hi = b.lower.to(dtype), b.upper.to(dtype)
    if dtype != torch.float64:
        lo = torch.where(
            lo.double() > b.lower, torch.nextafter(lo, torch.full_like(lo, -torch.inf)), lo
        )
        hi = torch.where(
            hi.double() < b.upper, torch.nextafter(hi, torch.full_like(hi, torch.inf)), hi
        )
    return Bounds(lo, hi)


def _apply_spec(b: Bounds, C: Tensor) -> Bounds:
    """Bounds of ``C @ y`` for ``y`` in ``b``; C has shape (batch, m, k) or (m, k)."""
    C = C.double()
    mid, rad = (b.upper + b.lower) / 2, (b.upper - b.lower) / 2
    c = torch.einsum("...mk,bk->bm", C, mid) if C.dim() == 2 else torch.einsum("bmk,bk->bm", C, mid)
    r = (
        torch.einsum("...mk,bk->bm", C.abs(), rad)
        if C.dim() == 2
        else torch.einsum("bmk,bk->bm", C.abs(), rad)
    )
    return Bounds(c - r, c + r)


def _linear_with_spec(m: nn.Linear, b: Bounds, C: Tensor) -> Bounds:
    """Fold the specification into the last linear layer (tighter than bounding its outputs)."""
    C = C.double()
    C = C.expand(b.lower.shape[0], *C.shape[-2:]) if C.dim() == 2 else C
    w = torch.einsum("bmk,kn->bmn", C, m.weight.double())
    bias = torch.einsum("bmk,k->bm", C, m.bias.double()) if m.bias is not None else 0.0
    mid, rad = (b.upper + b.lower) / 2, (b.upper - b.lower) / 2
    c = torch.einsum("bmn,bn->bm", w, mid) + bias
    r = torch.einsum("bmn,bn->bm", w.abs(), rad)
    return Bounds(c - r, c + r)


def ibp(model: nn.Module, lower: Tensor, upper: Tensor, C: Tensor | None = None) -> Bounds:
    """Interval bounds on ``model`` (or on ``C @ model``) over the box ``[lower, upper]``."""
    gm = trace(model)
    env: dict[fx.Node, Value] = {}
    nodes = list(gm.graph.nodes)
    out_node = next(n for n in nodes if n.op == "output")
    last = out_node.args[0]
    result: Bounds | None = None
    for node in nodes:
        key = node_key(gm, node)
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if key == "input":
            env[node] = Bounds(lower.double(), upper.double())
        elif key == "constant":
            env[node] = _get_attr(gm, node.target)
        elif key == "output":
            result = args[0]
        elif node.op == "call_module" and key in MODULE_RULES:
            m = gm.get_submodule(node.target)
            if C is not None and node is last and key == "linear":
                env[node] = _linear_with_spec(m, args[0], C)
                C = None
            else:
                env[node] = MODULE_RULES[key](m, *args)
        elif node.op != "call_module" and key in FUNCTION_RULES:
            env[node] = FUNCTION_RULES[key](*args, **kwargs)
        else:
            raise UnsupportedOperation(
                f"operation {describe(gm, node)} at node '{node.name}' is not supported by ibp; "
                f"supported: {', '.join(SUPPORTED)}"
            )
    if not isinstance(result, Bounds):
        raise UnsupportedOperation("the model output does not depend on its input")
    if C is not None:
        result = _apply_spec(result, C)
    return _outward(result, lower.dtype)

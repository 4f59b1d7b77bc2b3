"""Bound rules for fx calls on input-dependent tensors: each folds one fx node (a function, a
tensor method or a module) into graph operations. The tables that map fx targets to these rules,
and the list of supported operations derived from them, are in ``graph.py``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from robustlab.bounds import composite
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Op
from robustlab.bounds.ops.bilinear import Mul
from robustlab.bounds.ops.linear import Add, Cat, Reshape
from robustlab.bounds.ops.nonlinear import (
    GELU,
    Abs,
    Clamp,
    Erf,
    Exp,
    GELUTanh,
    Log,
    Pow,
    Sign,
    Sin,
)
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.ops.reduce import MaxReduce
from robustlab.bounds.ops.select import select
from robustlab.bounds.ops.shape import (
    CatConst,
    ConvTranspose,
    ScaleShift,
    Where,
    per_sample,
    resize,
)
from robustlab.errors import UnsupportedOperation


class Var:
    """An fx value that depends on the input: the graph node index and a concrete example."""

    def __init__(self, index: int, example: Tensor) -> None:
        self.index, self.example = index, example


@dataclass
class Call:
    """One fx node to fold: its operands (``Var`` where input-dependent), its concrete output,
    and ``add(name, op, inputs)`` appending a graph node."""

    node: fx.Node
    args: tuple
    kwargs: dict
    vars: list[Var]
    out: object
    add: Callable[[str, Op, list[Var]], Var]

    @property
    def name(self) -> str:
        return self.node.name

    def emit(self, op: Op, inputs: list[Var], name: str | None = None) -> Var:
        return self.add(name or self.node.name, op, inputs)

    def arg(self, i: int, key: str, default=None):
        return self.args[i] if len(self.args) > i else self.kwargs.get(key, default)

    def fn(self) -> Callable[[Tensor], Tensor]:
        """The node as a function of its first input-dependent operand (others fixed)."""
        v, node = self.vars[0], self.node

        def put(t):
            return lambda a: t if a is v else (a.example if isinstance(a, Var) else a)

        def run(t):
            args = fx.node.map_aggregate(self.args, put(t))
            kwargs = fx.node.map_aggregate(self.kwargs, put(t))
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

        return run

    def unsupported(self, what: str) -> UnsupportedOperation:
        return UnsupportedOperation(f"{what} at node '{self.name}'")


def is_var(v) -> bool:
    return isinstance(v, Var)


def per_sample_dims(call: Call, dims, ndim: int) -> tuple[int, ...]:
    """Dims of a tensor with ``ndim`` dims (batch included) as per-sample dims; the batch
    dimension (or all dims, ``dims`` None) is refused."""
    if dims is None:
        raise call.unsupported(f"{call.node.target} over every dimension (the batch's too)")
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    out = tuple(sorted(d % ndim for d in dims))
    if 0 in out:
        raise call.unsupported(f"{call.node.target} along the batch dimension")
    return tuple(d - 1 for d in out)


def constant(call: Call, v, what: str) -> float:
    """A constant number (Python number or one-element tensor)."""
    if isinstance(v, Tensor) and v.numel() == 1:
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    raise call.unsupported(f"{what} that is not a constant number")


def selection(call: Call, fn, x: Var, what: str) -> Op:
    """A function that only moves, copies or drops entries (a 0/1 matrix); its rounding terms are
    the most copies of one entry."""
    with torch.no_grad():
        probe = torch.ones_like(x.example[:1], requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fn(probe).sum(), probe, allow_unused=True)
    copies = 0 if g is None else int(g.max())
    if copies <= 1:  # transposed by a gather (ops/select.py) when it is one
        return select(fn, x.example, f"{what} at node '{call.name}'")
    return per_sample(fn, x.example, f"{what} at node '{call.name}'", copies)


# --- elementwise functions --------------------------------------------------------------------
def unary(op_factory: Callable[[], Op]) -> Callable[[Call], Var]:
    def rule(call: Call) -> Var:
        if len(call.vars) != 1:
            raise call.unsupported(f"{call.node.target} of several input-dependent operands")
        return call.emit(op_factory(), [call.vars[0]])

    return rule


def gelu(call: Call) -> Var:
    tanh = call.arg(1, "approximate", "none") == "tanh"
    return call.emit(GELUTanh() if tanh else GELU(), [call.vars[0]])


def power(call: Call) -> Var:
    base, p = call.args[0], call.args[1]
    if not is_var(base) or is_var(p):
        raise call.unsupported("pow with an input-dependent exponent")
    p = constant(call, p, "pow with an exponent")
    if p == 1:
        return base
    if p == 0:
        return call.emit(ScaleShift(0.0, 1.0), [base])
    return call.emit(Pow(p, "square" if p == 2 else "pow"), [base])


def clamp(call: Call) -> Var:
    x = call.args[0]
    lo, hi = call.arg(1, "min"), call.arg(2, "max")
    if is_var(lo) or is_var(hi):
        raise call.unsupported("clamp with input-dependent limits")
    if (isinstance(lo, Tensor) and lo.numel() > 1) or (isinstance(hi, Tensor) and hi.numel() > 1):
        y = x if lo is None else _max_const(call, x, lo, "lo")
        return y if hi is None else _min_const(call, y, hi, "hi")
    lo = None if lo is None else constant(call, lo, "clamp with a limit")
    hi = None if hi is None else constant(call, hi, "clamp with a limit")
    return call.emit(Clamp(lo, hi), [x])


def clamp_module(call: Call, m: nn.Module) -> Var:
    lo, hi = (0.0, 6.0) if isinstance(m, nn.ReLU6) else (m.min_val, m.max_val)
    return call.emit(Clamp(float(lo), float(hi)), [call.vars[0]])


def _max_const(call, x: Var, c: Tensor, tag: str) -> Var:
    """``max(x, c)`` for a constant tensor: ``c + relu(x - c)``."""
    c = c.detach().double()
    d = call.emit(ScaleShift(1.0, -c), [x], f"{call.name}.{tag}_diff")
    r = call.emit(ReLU(), [d], f"{call.name}.{tag}_relu")
    return call.emit(ScaleShift(1.0, c), [r], f"{call.name}.{tag}")


def _min_const(call, x: Var, c: Tensor, tag: str) -> Var:
    """``min(x, c) = c - relu(c - x)``."""
    c = c.detach().double()
    d = call.emit(ScaleShift(-1.0, c), [x], f"{call.name}.{tag}_diff")
    r = call.emit(ReLU(), [d], f"{call.name}.{tag}_relu")
    return call.emit(ScaleShift(-1.0, c), [r], f"{call.name}.{tag}")


def extremum(upper: bool) -> Callable[[Call], Var]:
    """``maximum`` / ``minimum`` of two operands: ``a + relu(b - a)`` / ``a - relu(a - b)`` (exact,
    so ReLU's relaxations and splits apply); with a constant, a clamp."""

    def rule(call: Call) -> Var:
        a, b = call.args[0], call.args[1]
        if is_var(a) and is_var(b):
            if a.example.shape != b.example.shape:
                raise call.unsupported("maximum / minimum of broadcast operands")
            if upper:
                d = call.emit(Add(-1.0), [b, a], f"{call.name}.diff")
            else:
                d = call.emit(Add(-1.0), [a, b], f"{call.name}.diff")
            r = call.emit(ReLU(), [d], f"{call.name}.relu")
            return call.emit(Add(1.0 if upper else -1.0), [a, r])
        x, c = (a, b) if is_var(a) else (b, a)
        if isinstance(c, Tensor) and c.numel() > 1:
            if torch.broadcast_shapes(c.shape, x.example.shape) != x.example.shape:
                raise call.unsupported("maximum / minimum with a constant that broadcasts x")
            return _max_const(call, x, c, "max") if upper else _min_const(call, x, c, "min")
        c = constant(call, c, "maximum / minimum with a constant")
        return call.emit(Clamp(c, None) if upper else Clamp(None, c), [x])

    return rule


# --- products ---------------------------------------------------------------------------------
def product(call: Call, a, b) -> Var:
    """``a * b`` of two input-dependent tensors (``x * x``: a square)."""
    if a is b:
        return call.emit(Pow(2.0, "square"), [a])
    if a.example.dim() != b.example.dim():
        raise call.unsupported("a product of operands of different ranks")
    return call.emit(Mul(), [a, b])


def quotient(call: Call, a, b) -> Var:
    """``a / b`` with an input-dependent divisor: ``a * (1 / b)`` (b's sign must be proven)."""
    r = call.emit(Pow(-1.0, "reciprocal"), [b], f"{call.name}.reciprocal")
    if is_var(a):
        return product(call, a, r)
    if isinstance(a, Tensor) and a.numel() > 1:
        if torch.broadcast_shapes(a.shape, r.example.shape) != r.example.shape:
            raise call.unsupported("division of a constant that broadcasts the divisor")
        return call.emit(ScaleShift(a.detach().double(), 0.0), [r])
    return call.emit(ScaleShift(constant(call, a, "division of a constant"), 0.0), [r])


def matmul(call: Call) -> Var:
    a, b = call.args[0], call.args[1]
    return composite.matmul(call.emit, a, b, call.name)


# --- reductions and shapes --------------------------------------------------------------------
def reduction(mean: bool) -> Callable[[Call], Var]:
    def rule(call: Call) -> Var:
        x = call.args[0]
        dims = per_sample_dims(call, call.arg(1, "dim"), x.example.dim())
        keep = bool(call.arg(2, "keepdim", False))
        return composite.reduce(call.emit, x, dims, mean, call.name, keepdim=keep)

    return rule


def extreme_reduction(sign: float) -> Callable[[Call], Var]:
    def rule(call: Call) -> Var:
        x = call.args[0]
        dims = per_sample_dims(call, call.arg(1, "dim"), x.example.dim())
        return call.emit(MaxReduce(dims, bool(call.arg(2, "keepdim", False)), sign), [x])

    return rule


def shaped(call: Call, what: str | None = None) -> Var:
    """A function moving or copying entries (slicing, flip, expand, index_select, ...)."""
    x = call.vars[0]
    return call.emit(selection(call, call.fn(), x, what or str(call.node.target)), [x])


def reshaped(call: Call) -> Var:
    """squeeze / unsqueeze / unflatten: the output's per-sample shape."""
    if call.out.dim() == 0 or call.out.shape[0] != call.vars[0].example.shape[0]:
        raise call.unsupported(f"{call.node.target} of the batch dimension")
    return call.emit(Reshape(tuple(call.out.shape[1:])), [call.vars[0]])


def split(call: Call) -> tuple:
    """split / chunk / unbind: one selection per part."""
    x, run = call.vars[0], call.fn()
    return tuple(
        call.emit(selection(call, lambda t, k=k: run(t)[k], x, "split"), [x], f"{call.name}.{k}")
        for k in range(len(call.out))
    )


def sample_constant(call: Call, c: Tensor, x: Var) -> Tensor:
    """A constant operand of a per-sample operation as one sample's value: its batch dim is 1, or
    the example's batch size with identical rows (a parameter expanded over ``x.shape[0]``)."""
    c = c.detach()
    if c.dim() != x.example.dim():
        raise call.unsupported("a constant operand without the batch dimension")
    if c.shape[0] == 1 or (c.shape[0] == x.example.shape[0] and bool((c == c[:1]).all())):
        return c[0]
    raise call.unsupported("a constant operand that differs across the batch")


def concatenate(call: Call, parts: list, dim: int) -> Var:
    like = next(p for p in parts if is_var(p))
    ndim = like.example.dim()
    dim = dim % ndim
    if dim == 0:
        raise call.unsupported("cat along the batch dimension")
    sizes = tuple(int((p.example if is_var(p) else p).shape[dim]) for p in parts)
    if all(is_var(p) for p in parts):
        return call.emit(Cat(dim - 1, sizes, len(parts)), list(parts))
    consts = tuple(None if is_var(p) else sample_constant(call, p, like) for p in parts)
    vars_ = [p for p in parts if is_var(p)]
    return call.emit(CatConst(dim - 1, consts, sizes, len(vars_)), vars_)


def stack(call: Call) -> Var:
    parts, dim = list(call.args[0]), call.arg(1, "dim", 0)
    like = next(p for p in parts if is_var(p))
    dim = dim % (like.example.dim() + 1)
    if dim == 0:
        raise call.unsupported("stack along the batch dimension")
    lifted = [
        call.emit(Reshape(tuple(p.example.unsqueeze(dim).shape[1:])), [p], f"{call.name}.{k}")
        if is_var(p)
        else p.unsqueeze(dim)
        for k, p in enumerate(parts)
    ]
    return concatenate(call, lifted, dim)


def where(call: Call) -> Var:
    cond, a, b = call.args[0], call.args[1], call.args[2]
    if is_var(cond):
        raise call.unsupported("where with an input-dependent condition")
    out = tuple(call.out.shape[1:])
    mask = torch.as_tensor(cond).bool()
    if mask.dim() == len(out) + 1 and mask.shape[0] == 1:
        mask = mask[0]
    if is_var(a) and is_var(b):
        a, b = (_expanded(call, v, out, t) for v, t in ((a, "a"), (b, "b")))
        return call.emit(Where(mask), [a, b])
    x, c = (a, b) if is_var(a) else (b, a)
    x = _expanded(call, x, out, "x")
    c = torch.as_tensor(c, dtype=torch.float64).double()
    if c.dim() == len(out) + 1 and c.shape[0] == 1:
        c = c[0]
    if not bool(torch.isfinite(c).all()):
        raise call.unsupported("where with an infinite constant")
    m = mask.double()
    keep = m if is_var(a) else 1 - m
    shift = torch.where(mask, 0.0, c) if is_var(a) else torch.where(mask, c, 0.0)
    return call.emit(ScaleShift(keep.expand(out).contiguous(), shift.double().expand(out)), [x])


def _expanded(call: Call, v: Var, shape: tuple, tag: str) -> Var:
    if tuple(v.example.shape[1:]) == shape:
        return v
    fn = lambda t: t.expand(t.shape[0], *shape)  # noqa: E731
    return call.emit(selection(call, fn, v, "expand"), [v], f"{call.name}.{tag}")


def layer_norm(call: Call) -> Var:
    x = call.args[0]
    shape, w, b = call.arg(1, "normalized_shape"), call.arg(2, "weight"), call.arg(3, "bias")
    eps = call.arg(4, "eps", 1e-5)
    if any(is_var(v) for v in (w, b)):
        raise call.unsupported("layer_norm with input-dependent weight or bias")
    return composite.layer_norm(call.emit, x, shape, w, b, eps, call.name)


def layer_norm_module(call: Call, m: nn.LayerNorm) -> Var:
    x = call.vars[0]
    return composite.layer_norm(
        call.emit, x, m.normalized_shape, m.weight, m.bias, m.eps, call.name
    )


def global_max_module(call: Call, m: nn.Module) -> Var:
    """``AdaptiveMaxPool1d/2d`` to size 1 (ONNX GlobalMaxPool): amax over the spatial dims."""
    x = call.vars[0]
    size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
    if any(s != 1 for s in size) or m.return_indices:
        raise call.unsupported(f"{type(m).__name__} to size {m.output_size} (only 1)")
    dims = tuple(range(1, x.example.dim() - 1))
    return call.emit(MaxReduce(dims, keepdim=True), [x])


def max_pool1d_module(call: Call, m: nn.MaxPool1d) -> Var:
    """``MaxPool1d`` as 2-D max pooling of a (C, 1, L) map."""
    x = call.vars[0]
    if m.dilation != 1 or m.ceil_mode or m.return_indices:
        raise call.unsupported("MaxPool1d with dilation, ceil_mode or return_indices")
    c, n = x.example.shape[1:]
    k, s = m.kernel_size, m.stride or m.kernel_size
    h = call.emit(Reshape((c, 1, n)), [x], f"{call.name}.as_2d")
    h = call.emit(MaxPool((1, k), (1, s), (0, m.padding)), [h], f"{call.name}.pool")
    return call.emit(Reshape((c, call.out.shape[-1])), [h])


def gelu_module(call: Call, m: nn.GELU) -> Var:
    return call.emit(GELUTanh() if m.approximate == "tanh" else GELU(), [call.vars[0]])


def conv_transpose_module(call: Call, m: nn.Module) -> Var:
    x = call.vars[0]
    if m.padding_mode != "zeros":
        raise call.unsupported(f"{type(m).__name__} with padding_mode {m.padding_mode!r}")
    k = m.weight.shape[2:]
    spatial = call.out.shape[2:]
    extra = tuple(
        spatial[i]
        - (
            (x.example.shape[2 + i] - 1) * m.stride[i]
            - 2 * m.padding[i]
            + m.dilation[i] * (k[i] - 1)
            + 1
        )
        for i in range(len(k))
    )
    op = ConvTranspose(
        m.weight, m.bias, tuple(m.stride), tuple(m.padding), extra, tuple(m.dilation), m.groups
    )
    return call.emit(op, [x])


def upsample_module(call: Call, m: nn.Upsample) -> Var:
    if m.mode not in ("nearest", "nearest-exact", "linear", "bilinear"):
        raise call.unsupported(f"Upsample with mode {m.mode!r} (nearest, linear, bilinear)")
    return _resize(call, lambda t: m(t), m.mode)


def interpolate(call: Call) -> Var:
    mode = call.arg(3, "mode", "nearest")
    if mode not in ("nearest", "nearest-exact", "linear", "bilinear") or call.kwargs.get(
        "antialias"
    ):
        raise call.unsupported(f"interpolate with mode {mode!r} (nearest, linear, bilinear)")
    return _resize(call, call.fn(), mode)


def _resize(call: Call, fn, mode: str) -> Var:
    """Resizing is linear with nonnegative weights; nearest copies entries (exact in the
    float32 bookkeeping), linear interpolation weights are computed in float64 there."""
    x = call.vars[0]
    if mode.startswith("nearest"):
        op = selection(call, fn, x, "resize")
    else:
        op = per_sample(fn, x.example, f"resize at node '{call.name}'", terms=None)
        op.tracked = False
    return call.emit(resize(op, x.example), [x])  # its matrices: windows pass through


ELEMENTWISE: dict[str, Callable[[], Op]] = {
    "exp": Exp,
    "log": Log,
    "sqrt": lambda: Pow(0.5, "sqrt"),
    "rsqrt": lambda: Pow(-0.5, "rsqrt"),
    "reciprocal": lambda: Pow(-1.0, "reciprocal"),
    "square": lambda: Pow(2.0, "square"),
    "sin": Sin,
    "cos": lambda: Sin(phase=math.pi / 2),
    "erf": Erf,
    "abs": Abs,
    "sign": Sign,
}

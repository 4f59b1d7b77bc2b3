"""Random small networks for the property-based soundness suite (hypothesis).

One table, ``OPS``: an op's name -> its builder. A builder takes hypothesis' ``draw``, the
per-sample shape of its input and a torch generator (weights are drawn from it, so a network is
fixed by a few drawn numbers) and returns a ``Block``, or None where the op does not apply to that
shape. A new bound rule gets tested by adding one entry (and, for a new kind of tensor, the kind
to ``KIND_OF``).

Every block also carries ``magnitude``: from a bound M >= |terms| of its input, one for its output
(|W| M + |b| for an affine map, M for ReLU, M + 1 for sigmoid ...). The float64 evaluation's
rounding error is at most a small multiple of eps64 x terms x M, which is all the tolerance the
suite allows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn import functional as F

SLOPES = (0.01, 0.1, 0.2, 0.3333, 1 / 7)
MAX_NUMEL = 48  # per-sample size above which no op that grows the tensor is drawn


@dataclass
class Block:
    module: nn.Module
    magnitude: Callable[[Tensor], Tensor]
    shape: tuple[int, ...]
    terms: int = 1  # most products summed per output value


def KIND_OF(shape: tuple[int, ...]) -> str:  # noqa: N802 - a table lookup by rank
    return {1: "flat", 2: "seq", 3: "image"}[len(shape)]


def _scale(draw, lo: float = -4.0, hi: float = 4.0) -> float:
    return 10.0 ** draw(st.floats(lo, hi))


def _randn(g, *shape, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=g) * scale


class Lambda(nn.Module):
    """A traced function with Python constants (``fn(x, *consts)``)."""

    def __init__(self, fn, *consts):
        super().__init__()
        self.fn, self.consts = fn, consts

    def forward(self, x):
        return self.fn(x, *self.consts)


class Residual(nn.Module):
    def __init__(self, inner: nn.Module, sign: float):
        super().__init__()
        self.inner, self.sign = inner, sign

    def forward(self, x):
        return x + self.inner(x) if self.sign > 0 else x - self.inner(x)


class CatBranch(nn.Module):
    def __init__(self, inner: nn.Module, first: bool):
        super().__init__()
        self.inner, self.first = inner, first

    def forward(self, x):
        y = self.inner(x)
        return torch.cat([y, x] if self.first else [x, y], dim=1)


class Net(nn.Module):
    def __init__(self, blocks: list[Block], names: list[str]):
        super().__init__()
        self.layers = nn.ModuleList([b.module for b in blocks])
        self.blocks, self.names = blocks, names

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x

    def magnitude(self, m: Tensor) -> Tensor:
        for b in self.blocks:
            m = b.magnitude(m)
        return m

    @property
    def terms(self) -> int:
        return sum(b.terms for b in self.blocks)


# ---- builders ---------------------------------------------------------------------------------


def _linear(draw, shape, g, out: int | None = None) -> Block | None:
    if len(shape) != 1:
        return None
    n_out = out or draw(st.integers(1, 6))
    lin = nn.Linear(shape[0], n_out, bias=draw(st.booleans()))
    with torch.no_grad():
        lin.weight.copy_(_randn(g, n_out, shape[0], scale=_scale(draw)))
        if lin.bias is not None:
            lin.bias.copy_(_randn(g, n_out, scale=_scale(draw)))
    w, b = lin.weight.detach().double().abs(), lin.bias
    b = None if b is None else b.detach().double().abs()
    return Block(lin, lambda m: F.linear(m, w, b), (n_out,), shape[0])


def _conv(draw, shape, g, same: bool = False) -> Block | None:
    if len(shape) not in (2, 3):
        return None
    spatial = len(shape) - 1
    c_in = shape[0]
    groups = draw(st.sampled_from([d for d in (1, 2, 3) if c_in % d == 0]))
    c_out = c_in if same else groups * draw(st.integers(1, 3))
    k = draw(st.sampled_from([1, 3])) if same else draw(st.integers(1, 3))
    stride = 1 if same else draw(st.integers(1, 2))
    dilation = 1 if same else draw(st.integers(1, 2))
    pad = k // 2 if same else draw(st.integers(0, 2))
    sizes = [(n + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for n in shape[1:]]
    if min(sizes) < 1 or min(shape[1:]) + 2 * pad < dilation * (k - 1) + 1:
        return None
    cls = nn.Conv1d if spatial == 1 else nn.Conv2d
    conv = cls(c_in, c_out, k, stride, pad, dilation, groups, bias=draw(st.booleans()))
    with torch.no_grad():
        conv.weight.copy_(_randn(g, *conv.weight.shape, scale=_scale(draw)))
        if conv.bias is not None:
            conv.bias.copy_(_randn(g, c_out, scale=_scale(draw)))
    w = conv.weight.detach().double().abs()
    b = None if conv.bias is None else conv.bias.detach().double().abs()
    f = F.conv1d if spatial == 1 else F.conv2d
    return Block(
        conv,
        lambda m: f(m, w, b, stride, pad, dilation, groups),
        (c_out, *sizes),
        c_in // groups * k**spatial,
    )


def _batchnorm(draw, shape, g) -> Block | None:
    c = shape[0]
    bn = (nn.BatchNorm1d(c) if len(shape) < 3 else nn.BatchNorm2d(c)).eval()
    with torch.no_grad():
        bn.running_mean.copy_(_randn(g, c, scale=_scale(draw, -2, 6)))
        bn.running_var.copy_(10.0 ** (torch.rand(c, generator=g) * 8 - 6))
        bn.weight.copy_(_randn(g, c, scale=_scale(draw, -2, 2)))
        bn.bias.copy_(_randn(g, c, scale=_scale(draw, -2, 2)))
    view = (-1,) + (1,) * (len(shape) - 1)
    mean = bn.running_mean.double().abs().view(view)
    scale = (bn.weight.detach().double().abs() / torch.sqrt(bn.running_var.double() + bn.eps)).view(
        view
    )
    bias = bn.bias.detach().double().abs().view(view)
    return Block(bn, lambda m: (m + mean) * scale + bias, shape, 4)


def _activation(draw, shape, g) -> Block | None:
    kind = draw(st.sampled_from(["relu", "leaky", "sigmoid", "tanh"]))
    functional = draw(st.booleans())
    if kind == "leaky":
        slope = draw(st.sampled_from(SLOPES) | st.floats(1e-3, 0.9))
        mod = Lambda(F.leaky_relu, slope) if functional else nn.LeakyReLU(slope)
    else:
        fns = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
        mods = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        mod = Lambda(fns[kind]) if functional else mods[kind]()
    bump = 0.0 if kind in ("relu", "leaky") else 1.0
    return Block(mod, lambda m: m + bump, shape)


# elementwise functions of the general-graph rules: name -> (function, output magnitude from an
# input magnitude m, which also bounds how far an input error can move the output: derivative x m)
UNARY: dict[str, tuple[Callable, Callable[[Tensor], Tensor]]] = {
    "sin": (torch.sin, lambda m: m + 1),
    "cos": (torch.cos, lambda m: m + 1),
    "erf": (torch.erf, lambda m: m + 1),
    "gelu": (F.gelu, lambda m: 1.2 * m + 1),
    "abs": (torch.abs, lambda m: m),
    "square": (lambda x: x * x, lambda m: 2 * m * m + 1),  # the product rule of x * y
    "softmax": (lambda x: F.softmax(x, dim=-1), lambda m: m + 1),
}


def _unary(draw, shape, g) -> Block | None:
    name = draw(st.sampled_from(sorted(UNARY)))
    fn, mag = UNARY[name]
    return Block(Lambda(fn), mag, shape)


def _constant(draw, shape, g) -> Block | None:
    op = draw(st.sampled_from(["add", "sub", "rsub", "mul", "div"]))
    c = draw(st.sampled_from([-1.0, 1.0])) * _scale(draw, -3, 3)
    if draw(st.booleans()):
        c = float(torch.tensor(c, dtype=torch.float32))  # a float32 number, or not
    fns = {
        "add": (lambda x, c: x + c, lambda m: m + abs(c)),
        "sub": (lambda x, c: x - c, lambda m: m + abs(c)),
        "rsub": (lambda x, c: c - x, lambda m: m + abs(c)),
        "mul": (lambda x, c: x * c, lambda m: m * abs(c)),
        "div": (lambda x, c: x / c, lambda m: m / abs(c)),
    }
    fn, mag = fns[op]
    return Block(Lambda(fn, c), mag, shape, 2)


def _residual(draw, shape, g) -> Block | None:
    inner = (
        _linear(draw, shape, g, out=shape[0]) if len(shape) == 1 else _conv(draw, shape, g, True)
    )
    if inner is None or inner.shape != shape:
        return None
    if draw(st.booleans()):
        act = _activation(draw, shape, g)
        mod = nn.Sequential(inner.module, act.module)
        mag = lambda m: act.magnitude(inner.magnitude(m))  # noqa: E731
    else:
        mod, mag = inner.module, inner.magnitude
    return Block(
        Residual(mod, draw(st.sampled_from([1.0, -1.0]))),
        lambda m: m + mag(m),
        shape,
        inner.terms + 1,
    )


def _cat(draw, shape, g) -> Block | None:
    if math.prod(shape) * 2 > MAX_NUMEL:
        return None
    inner = _activation(draw, shape, g) if draw(st.booleans()) else _constant(draw, shape, g)
    first = draw(st.booleans())
    out = (2 * shape[0], *shape[1:])

    def mag(m):
        return torch.cat([inner.magnitude(m), m] if first else [m, inner.magnitude(m)], 1)

    return Block(CatBranch(inner.module, first), mag, out, inner.terms)


def _slice(draw, shape, g) -> Block | None:
    dim = draw(st.integers(1, len(shape)))
    n = shape[dim - 1]
    if n < 2:
        return None
    a = draw(st.integers(0, n - 2))
    b = draw(st.integers(a + 1, n))
    index = (slice(None),) * dim + (slice(a, b),)
    out = list(shape)
    out[dim - 1] = b - a
    return Block(Lambda(lambda x, i: x[i], index), lambda m: m[index], tuple(out))


def _pad(draw, shape, g) -> Block | None:
    if len(shape) == 1 and math.prod(shape) + 4 > MAX_NUMEL:
        return None
    p = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    pads = p if len(shape) < 3 else p + p
    out = list(shape)
    out[-1] += p[0] + p[1]
    if len(shape) == 3:
        out[-2] += p[0] + p[1]
    if math.prod(out) > 2 * MAX_NUMEL:
        return None
    return Block(Lambda(F.pad, pads), lambda m: F.pad(m, pads), tuple(out))


def _permute(draw, shape, g) -> Block | None:
    if len(shape) < 2:
        return None
    dims = (0, 2, 1) if len(shape) == 2 else (0, 1, 3, 2)
    out = tuple(shape[d - 1] for d in dims[1:])
    if draw(st.booleans()):
        mod = Lambda(lambda x, d: x.permute(*d), dims)
    else:
        mod = Lambda(lambda x, a, b: torch.transpose(x, a, b), len(dims) - 2, len(dims) - 1)
    return Block(mod, lambda m: m.permute(*dims), out)


def _pool(draw, shape, g) -> Block | None:
    if len(shape) != 3 or min(shape[1:]) < 2:
        return None
    k = draw(st.integers(2, min(3, *shape[1:])))
    stride = draw(st.integers(1, k))
    pad = draw(st.integers(0, k // 2))
    out = (shape[0], *[(n + 2 * pad - k) // stride + 1 for n in shape[1:]])
    if draw(st.booleans()):
        mod = nn.MaxPool2d(k, stride, pad)
        return Block(mod, lambda m: F.max_pool2d(m, k, stride, pad), out)
    mod = nn.AvgPool2d(k, stride, pad)
    return Block(mod, lambda m: F.avg_pool2d(m, k, stride, pad), out, k * k)


def _avgpool1d(draw, shape, g) -> Block | None:
    if len(shape) != 2 or shape[1] < 2:
        return None
    k = draw(st.integers(2, min(3, shape[1])))
    mod = nn.AvgPool1d(k, draw(st.integers(1, k)))
    out = (shape[0], (shape[1] - k) // mod.stride[0] + 1)
    return Block(mod, lambda m: F.avg_pool1d(m, k, mod.stride), out, k)


def _flatten(draw, shape, g) -> Block | None:
    if len(shape) == 1:
        return None
    how = draw(st.sampled_from(["module", "function", "reshape"]))
    if how == "module":
        mod = nn.Flatten()
    elif how == "function":
        mod = Lambda(torch.flatten, 1)
    else:
        mod = Lambda(lambda x: x.reshape(x.size(0), -1))
    return Block(mod, lambda m: m.flatten(1), (math.prod(shape),))


OPS: dict[str, Callable] = {
    "linear": _linear,
    "conv": _conv,
    "batchnorm": _batchnorm,
    "activation": _activation,
    "unary": _unary,
    "constant": _constant,
    "residual": _residual,
    "cat": _cat,
    "slice": _slice,
    "pad": _pad,
    "permute": _permute,
    "pool2d": _pool,
    "avgpool1d": _avgpool1d,
    "flatten": _flatten,
}


def touching(draw, shape, g, centre: Tensor, half: Tensor) -> Block:
    """A first layer whose outputs' bounds over the box ``centre -+ half`` (integer centres, the
    same box at every position of a feature map) touch 0 exactly: a 1x1 convolution (or a linear
    layer) with integer weights and a bias that puts 0 at the lower end, the upper end, or the
    middle (an unstable neuron exactly as narrow as the box, however narrow)."""
    c = shape[0]
    n_out = draw(st.integers(1, 4))
    w = torch.randint(-2, 3, (n_out, c), generator=g).double()
    c_c = centre.reshape(c, -1)[:, 0].double()
    h_c = half.reshape(c, -1)[:, 0].double()
    mid, reach = w @ c_c, w.abs() @ h_c
    side = torch.randint(0, 3, (n_out,), generator=g)
    bias = torch.where(side == 0, reach - mid, torch.where(side == 1, -reach - mid, -mid))
    if len(shape) == 1:
        mod = nn.Linear(c, n_out)
    else:
        mod = (nn.Conv1d if len(shape) == 2 else nn.Conv2d)(c, n_out, 1)
    with torch.no_grad():
        mod.weight.copy_(w.view(mod.weight.shape))
        mod.bias.copy_(bias)
    wa, ba = mod.weight.detach().double().abs(), mod.bias.detach().double().abs()
    if len(shape) == 1:
        mag = lambda m: F.linear(m, wa, ba)  # noqa: E731
    else:
        f = F.conv1d if len(shape) == 2 else F.conv2d
        mag = lambda m: f(m, wa, ba)  # noqa: E731
    return Block(mod, mag, (n_out, *shape[1:]), c)


def head(draw, shape, g) -> list[Block]:
    """Flatten (if needed) and a linear layer to 1-3 outputs."""
    blocks = []
    if len(shape) > 1:
        blocks.append(Block(nn.Flatten(), lambda m: m.flatten(1), (math.prod(shape),)))
        shape = blocks[-1].shape
    blocks.append(_linear(draw, shape, g, out=draw(st.integers(1, 3))))
    return blocks

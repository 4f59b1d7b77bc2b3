"""A sound global L2 Lipschitz bound for any supported network (Szegedy et al. 2014,
arXiv:1312.6199: the product of per-layer norms along paths, sums at additions) with rigorous
per-layer norms (``bounds.norms``), and the certified radius ``margin / L`` it gives (Tsuzuku et
al. 2018, arXiv:1802.04034): ``|f_y - f_j|`` changes by at most ``L_yj ||dx||_2`` with
``L_yj = ||w_y - w_j|| L_before`` for a final Linear layer (``<= sqrt(2) L``)."""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from robustlab.bounds.norms import (
    U,
    conv_norm_upper,
    matrix_norm_upper,
    windows_per_input,
)
from robustlab.errors import RobustlabError, UnsupportedOperation

# an upper bound on each activation's slope (sup |f'|): exact values rounded up
ACTIVATIONS: dict[type, float] = {
    nn.ReLU: 1.0, nn.ReLU6: 1.0, nn.Hardtanh: 1.0, nn.Tanh: 1.0, nn.Softplus: 1.0,
    nn.Softsign: 1.0, nn.Identity: 1.0, nn.Dropout: 1.0, nn.Flatten: 1.0, nn.Unflatten: 1.0,
    nn.Sigmoid: 0.25, nn.Hardsigmoid: 1 / 6, nn.Hardswish: 1.5, nn.SiLU: 1.1,
    nn.GELU: 1.15, nn.Softmax: 1.0,
}  # fmt: skip
FUNCTIONS: dict[object, float] = {
    torch.relu: 1.0, F.relu: 1.0, torch.tanh: 1.0, F.tanh: 1.0, torch.sigmoid: 0.25,
    F.sigmoid: 0.25, torch.abs: 1.0, operator.abs: 1.0, torch.clamp: 1.0, torch.clip: 1.0,
    F.gelu: 1.15, F.silu: 1.1, F.softplus: 1.0, F.hardtanh: 1.0, F.relu6: 1.0,
    torch.flatten: 1.0, torch.reshape: 1.0, torch.squeeze: 1.0, torch.unsqueeze: 1.0,
    torch.permute: 1.0, torch.transpose: 1.0, operator.getitem: 1.0, F.pad: 1.0,
    torch.softmax: 1.0, F.softmax: 1.0, F.dropout: 1.0,
}  # fmt: skip
METHODS = {"flatten", "reshape", "view", "contiguous", "relu", "relu_", "tanh", "sigmoid",
           "clone", "squeeze", "unsqueeze", "permute", "transpose", "clamp", "abs", "float",
           "double", "to", "softmax"}  # fmt: skip
_SIGMOID = {"sigmoid"}
SUPPORTED = (
    "Linear, Conv1d, Conv2d, BatchNorm1d/2d (eval), MaxPool1d/2d, AvgPool1d/2d, "
    "AdaptiveAvgPool2d (divisible), "
    + ", ".join(sorted(t.__name__ for t in ACTIVATIONS))
    + ", reshapes, slicing, padding, cat, add / sub, scaling by constants"
)


def _up(v: float) -> float:
    """``v`` (>= 0) nudged past a few roundings: every product below rounds upward."""
    return math.nextafter(v * (1 + 4 * U), math.inf)


def _tuple(v, dims: int) -> tuple[int, ...]:
    return (v,) * dims if isinstance(v, int) else tuple(v)


def _conv_norm(m: nn.Module, shape: tuple[int, ...]) -> float:
    if m.padding_mode != "zeros":
        raise UnsupportedOperation(
            f"{type(m).__name__} with padding_mode={m.padding_mode!r} in the Lipschitz bound; "
            "supported: zeros"
        )
    pads = tuple(m._reversed_padding_repeated_twice)
    if isinstance(m, nn.Conv1d):  # a 2-d convolution over a (1, L) grid
        w = m.weight[:, :, None, :]
        return conv_norm_upper(w, (1, shape[-1]), stride=(1, m.stride[0]),
                               pads=(pads[0], pads[1], 0, 0), dilation=(1, m.dilation[0]),
                               groups=m.groups)  # fmt: skip
    return conv_norm_upper(m.weight, tuple(shape[-2:]), stride=tuple(m.stride), pads=pads,
                           dilation=tuple(m.dilation), groups=m.groups)  # fmt: skip


def _pool_norm(m: nn.Module, dims: int) -> float:
    k, s = _tuple(m.kernel_size, dims), _tuple(m.stride or m.kernel_size, dims)
    c = windows_per_input(k, s)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        if any(d != 1 for d in _tuple(m.dilation, dims)):
            raise UnsupportedOperation(f"{type(m).__name__} with dilation in the Lipschitz bound")
        # each output is 1-Lipschitz in its window; an input lies in at most c windows
        return _up(math.sqrt(c))
    pad = any(p != 0 for p in _tuple(m.padding, dims))
    if m.ceil_mode or getattr(m, "divisor_override", None) or (pad and not m.count_include_pad):
        raise UnsupportedOperation(
            f"{type(m).__name__} with ceil_mode, divisor_override or count_include_pad=False in "
            "the Lipschitz bound"
        )
    # entries 1/k: row sums <= 1, column sums <= c/k, and ||A||_2 <= sqrt(||A||_1 ||A||_inf)
    return _up(math.sqrt(c / math.prod(k)))


def module_norm(m: nn.Module, shape: tuple[int, ...]) -> float:
    """An upper bound on the L2 Lipschitz constant of one layer (eval mode) on inputs of the
    per-sample ``shape``."""
    if type(m) in ACTIVATIONS:  # the exact type: a subclass may compute something else
        return ACTIVATIONS[type(m)]
    if isinstance(m, nn.Linear):
        return matrix_norm_upper(m.weight)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _conv_norm(m, shape)
    if isinstance(m, nn.LeakyReLU):
        return max(1.0, abs(m.negative_slope))
    if isinstance(m, nn.ELU):
        return max(1.0, abs(m.alpha))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_var is None:
            raise UnsupportedOperation(f"{type(m).__name__} without running statistics")
        scale = 1 / torch.sqrt(m.running_var.double() + m.eps)
        if m.weight is not None:
            scale = scale * m.weight.detach().double()
        return _up(_up(float(scale.abs().max())))
    if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)):
        return _pool_norm(m, 1)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_norm(m, 2)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        out = _tuple(m.output_size, 2)
        if None in out or any(a % b for a, b in zip(shape[-2:], out, strict=True)):
            raise UnsupportedOperation("AdaptiveAvgPool2d whose output does not divide its input")
        k = tuple(a // b for a, b in zip(shape[-2:], out, strict=True))
        return _up(1 / math.sqrt(math.prod(k)))
    raise UnsupportedOperation(f"{type(m).__name__} in the Lipschitz bound; supported: {SUPPORTED}")


@dataclass(frozen=True)
class GlobalLipschitz:
    """An upper bound on the L2 Lipschitz constant of the whole model, and its parts."""

    bound: float  # ||f(x) - f(x')||_2 <= bound * ||x - x'||_2 for all x, x'
    layers: tuple[tuple[str, float], ...]  # (layer or node, norm bound) per operation
    before_last: float | None  # the bound up to the final Linear layer's input, if there is one
    last_weight: Tensor | None  # that final Linear layer's weight (float64)

    def pairwise(self) -> Tensor | None:
        """Bounds on the Lipschitz constant of every logit difference f_i - f_j: (K, K)."""
        if self.last_weight is None:
            return None
        w = self.last_weight
        diff = (w[:, None, :] - w[None, :, :]).norm(dim=2)
        n = w.shape[1]
        return diff * (1 + (2 * n + 8) * U) * _up(self.before_last) * (1 + 8 * U)

    def to_dict(self) -> dict:
        return {"bound": self.bound, "layers": [list(x) for x in self.layers]}


def _constant(node, gm: fx.GraphModule):
    """The value of a constant operand: a number, or a get_attr tensor."""
    if isinstance(node, (int, float)):
        return torch.tensor(float(node), dtype=torch.float64)
    if isinstance(node, fx.Node) and node.op == "get_attr":
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
        if isinstance(value, Tensor):
            return value.detach().double()
    return None


def _scale(node: fx.Node, lip: dict, gm: fx.GraphModule) -> float:
    """max |c| for ``x * c``, ``c * x`` or ``x / c`` with a constant c (number or tensor)."""
    a, b = node.args[:2]
    divide = node.target in (operator.truediv, torch.div, torch.true_divide)
    if divide and a not in lip:
        raise UnsupportedOperation(f"'{node.name}': division by an input-dependent value")
    c = _constant(b if a in lip else a, gm)
    if c is None:
        raise UnsupportedOperation(f"'{node.name}': only scaling by a constant is supported")
    if divide:
        low = float(c.abs().min())
        if low == 0:
            raise UnsupportedOperation(f"'{node.name}': division by zero")
        return _up(1 / low)
    return float(c.abs().max())


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape[1:]) if hasattr(meta, "shape") else None


_ADD = (operator.add, torch.add, operator.sub, torch.sub)
_MUL = (operator.mul, torch.mul, operator.truediv, torch.div, torch.true_divide)
_CAT = (torch.cat, torch.concat, torch.stack)


def _factor(node: fx.Node, deps: list, lip: dict, gm: fx.GraphModule) -> float:
    """The Lipschitz constant of one node as a function of the input (all paths)."""
    if node.op == "call_module":
        return module_norm(gm.get_submodule(node.target), _shape(deps[0]) or ()) * lip[deps[0]]
    if node.target in _ADD:
        return sum(lip[d] for d in deps)
    if node.target in _MUL and len(deps) == 1:
        return _scale(node, lip, gm) * lip[deps[0]]
    if node.target in _CAT or node.target in (torch.maximum, torch.minimum):
        return math.sqrt(sum(lip[d] ** 2 for d in deps))  # disjoint / per-entry parts
    if node.target in (torch.mean, torch.sum) or (
        node.op == "call_method" and node.target in ("mean", "sum")
    ):
        a, b = _shape(deps[0]), _shape(node)
        k = math.prod(a) / max(1, math.prod(b or ()))
        slope = 1 / math.sqrt(k) if "mean" in str(node.target) else math.sqrt(k)
        return slope * lip[deps[0]]
    if len(deps) == 1 and node.op == "call_function" and node.target in FUNCTIONS:
        return FUNCTIONS[node.target] * lip[deps[0]]
    if len(deps) == 1 and node.op == "call_method" and node.target in METHODS:
        return (0.25 if node.target in _SIGMOID else 1.0) * lip[deps[0]]
    name = getattr(node.target, "__name__", node.target)
    raise UnsupportedOperation(
        f"'{node.name}' ({node.op} {name}) in the Lipschitz bound; supported: {SUPPORTED}"
    )


def _tensor_operands(node: fx.Node, lip: dict) -> list[fx.Node]:
    """The input-dependent operands of a node, repeats kept (``x + x`` is 2-Lipschitz)."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) if a in lip else None)
    return found


def global_lipschitz(model: nn.Module, input_shape: tuple[int, ...]) -> GlobalLipschitz:
    """A provable upper bound on the L2 Lipschitz constant of ``model`` (eval mode; inputs of the
    per-sample ``input_shape``), walking its fx graph: every layer's norm bounded rigorously,
    products along paths and sums at additions rounded upward."""
    try:
        gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - tracing failures of user code come in any type
        raise UnsupportedOperation(f"the Lipschitz bound cannot trace the model ({e})") from None
    was_training = gm.training
    gm.eval()
    try:
        dtype = next((p.dtype for p in gm.parameters()), torch.float32)
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_shape, dtype=dtype))
    finally:
        gm.train(was_training)
    lip: dict[fx.Node, float] = {}
    layers = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            lip[node] = 1.0
            continue
        deps = _tensor_operands(node, lip)
        if node.op == "output" or not deps or _shape(node) is None:
            continue  # constants, and values that do not depend on the input (shapes)
        lip[node] = _up(_factor(node, deps, lip, gm))
        before = max(lip[d] for d in deps)
        label = (
            f"{type(gm.get_submodule(node.target)).__name__} '{node.target}'"
            if node.op == "call_module"
            else node.name
        )
        layers.append((label, lip[node] / before if before else 0.0))
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node) or out not in lip:
        raise RobustlabError("expected a model with one output that depends on its input")
    last = gm.get_submodule(out.target) if out.op == "call_module" else None
    if not isinstance(last, nn.Linear):
        return GlobalLipschitz(lip[out], tuple(layers), None, None)
    before = lip[out.all_input_nodes[0]]
    return GlobalLipschitz(lip[out], tuple(layers), before, last.weight.detach().double())


MARGIN_SLACK = 2.0**-30  # relative allowance for the float64 forward pass of the margins


@dataclass(frozen=True)
class Radii:
    """Certified L2 radii per input: no point closer than ``radius`` changes the class."""

    radius: Tensor  # (N,) float64; 0 where the label is not the strict top class
    margin: Tensor  # (N,) logit[y] - max_{j != y} logit[j] (float64 forward pass)
    lipschitz: GlobalLipschitz

    def certified(self, norm: str, eps: float, input_dim: int) -> Tensor:
        """Whether the ``norm`` ball of radius ``eps`` lies inside each certified L2 ball:
        ``eps`` in L2, ``sqrt(d) eps`` in Linf (``||v||_2 <= sqrt(d) ||v||_inf``)."""
        if norm == "2":
            r = float(eps)
        elif norm == "inf":
            r = _up(float(eps) * _up(math.sqrt(input_dim)))
        else:
            raise RobustlabError(f"norm must be 'inf' or '2'; found {norm!r}")
        return self.radius > r


def l2_radius(
    model: nn.Module, x: Tensor, y: Tensor | None = None, *, bound: GlobalLipschitz | None = None
) -> Radii:
    """Certified L2 radii ``min_j (f_y - f_j)(x) / L_yj`` (Tsuzuku et al. 2018) from the global
    bound (computed unless given); margins from a float64 forward pass, less ``2**-30 (1 + |f_y|
    + |f_j|)`` for its rounding. ``y`` defaults to the prediction."""
    bound = bound or global_lipschitz(model, tuple(x.shape[1:]))
    was_training = model.training
    model.eval()
    try:
        exact = copy.deepcopy(model).double()
        with torch.no_grad():
            logits = exact(x.detach().double()).cpu()
    finally:
        model.train(was_training)
    y = logits.argmax(1) if y is None else y.to(torch.long).reshape(-1).cpu()
    if y.shape != (len(x),):
        raise RobustlabError(f"expected one label per input ({len(x)}); found {tuple(y.shape)}")
    own = logits.gather(1, y[:, None])
    gaps = own - logits - MARGIN_SLACK * (1 + own.abs() + logits.abs())  # (N, K)
    pair = bound.pairwise()
    lips = pair[y] if pair is not None else torch.full_like(gaps, _up(math.sqrt(2) * bound.bound))
    ratio = torch.where(lips > 0, gaps / lips.clamp_min(1e-300), torch.where(gaps > 0, math.inf, 0))
    ratio.scatter_(1, y[:, None], math.inf)
    ratio = torch.nextafter(ratio, torch.zeros_like(ratio))  # the division rounded down
    others = logits.clone()
    others.scatter_(1, y[:, None], -math.inf)
    margin = own[:, 0] - others.amax(1)
    radius = ratio.amin(1).clamp_min(0.0)
    return Radii(torch.where(margin > 0, radius, 0.0), margin, bound)

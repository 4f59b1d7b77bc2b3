"""A global L2 Lipschitz upper bound from per-layer spectral norms (Szegedy et al. 2014,
arXiv:1312.6199), with exact norms of linear layers and convolutions bounded through the Fourier
transform of the kernel (Sedghi et al. 2019, arXiv:1805.10408)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from robustlab.errors import UnsupportedOperation

SAFETY = 1e-6  # relative widening of every float64 layer norm (SVD / FFT rounding)
_ONE_LIPSCHITZ = (nn.ReLU, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Flatten,
                  nn.Unflatten, nn.ReLU6)  # fmt: skip
_RESHAPES = {
    "flatten",
    "reshape",
    "view",
    "contiguous",
    "relu",
    "relu_",
    "tanh",
    "clone",
    "squeeze",
    "unsqueeze",
}
_FUNCTIONS = {torch.flatten: 1.0, torch.reshape: 1.0, torch.relu: 1.0, F.relu: 1.0,
              torch.tanh: 1.0, torch.sigmoid: 0.25, F.sigmoid: 0.25, torch.squeeze: 1.0,
              torch.unsqueeze: 1.0}  # fmt: skip


@dataclass(frozen=True)
class GlobalLipschitz:
    """An upper bound on the L2 Lipschitz constant of the whole model, and its parts."""

    bound: float  # ||f(x) - f(x')||_2 <= bound * ||x - x'||_2 for all x, x'
    layers: tuple[tuple[str, float], ...]  # (node, norm bound) per operation
    before_last: float | None  # the bound up to the final Linear layer's input, if there is one
    last_weight: Tensor | None  # that final Linear layer's weight (float64)

    def pairwise(self) -> Tensor | None:
        """Bounds on the Lipschitz constant of every logit difference f_i - f_j: (K, K)."""
        if self.last_weight is None:
            return None
        w = self.last_weight
        diff = (w[:, None, :] - w[None, :, :]).norm(dim=2)
        return diff * self.before_last * (1 + SAFETY)


def _widen(v: float) -> float:
    return float(v) * (1 + SAFETY)


def linear_norm(weight: Tensor) -> float:
    """The exact spectral norm of a weight matrix (SVD in float64)."""
    return _widen(torch.linalg.matrix_norm(weight.detach().double(), ord=2))


def conv2d_norm(m: nn.Conv2d, in_shape: tuple[int, ...]) -> float:
    """An upper bound on the spectral norm of a zero-padded 2-d convolution on (C, H, W) inputs:
    the largest singular value over frequencies of the kernel's 2-d DFT on the padded grid (the
    convolution is a restriction of that circular one; striding only drops outputs)."""
    if m.padding_mode != "zeros":
        raise UnsupportedOperation(f"Conv2d with padding_mode={m.padding_mode!r}; supported: zeros")
    w = m.weight.detach().double()
    if m.groups > 1:
        full = torch.zeros(m.out_channels, m.in_channels, *w.shape[2:], dtype=torch.float64)
        per_in, per_out = m.in_channels // m.groups, m.out_channels // m.groups
        for g in range(m.groups):
            o, i = slice(g * per_out, (g + 1) * per_out), slice(g * per_in, (g + 1) * per_in)
            full[o, i] = w[o]
        w = full
    dh, dw = m.dilation
    if (dh, dw) != (1, 1):  # a dilated kernel is a larger kernel with zeros
        k = torch.zeros(*w.shape[:2], (w.shape[2] - 1) * dh + 1, (w.shape[3] - 1) * dw + 1,
                        dtype=torch.float64)  # fmt: skip
        k[:, :, ::dh, ::dw] = w
        w = k
    left, right, top, bottom = m._reversed_padding_repeated_twice
    n1 = max(in_shape[-2] + top + bottom, w.shape[2])
    n2 = max(in_shape[-1] + left + right, w.shape[3])
    spectrum = torch.fft.fft2(w, s=(n1, n2))  # (out, in, n1, n2)
    sv = torch.linalg.matrix_norm(spectrum.permute(2, 3, 0, 1), ord=2)
    return _widen(sv.max())


def _pool_overlap(kernel, stride, dims: int) -> int:
    k = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
    s = k if stride is None else ((stride,) * dims if isinstance(stride, int) else tuple(stride))
    return math.prod(math.ceil(a / b) for a, b in zip(k, s, strict=True))


def _plain_average(m: nn.AvgPool2d) -> bool:
    padded = m.padding not in (0, (0, 0))
    return not m.divisor_override and not m.ceil_mode and (not padded or m.count_include_pad)


def module_norm(m: nn.Module, in_shape: tuple[int, ...]) -> float:
    """An upper bound on the L2 Lipschitz constant of one layer (eval mode)."""
    if isinstance(m, nn.Linear):
        return linear_norm(m.weight)
    if isinstance(m, nn.Conv2d):
        return conv2d_norm(m, in_shape)
    if isinstance(m, _ONE_LIPSCHITZ):
        return 1.0
    if isinstance(m, nn.Sigmoid):
        return 0.25
    if isinstance(m, nn.LeakyReLU):
        return max(1.0, abs(m.negative_slope))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_var is not None:
        scale = 1 / torch.sqrt(m.running_var.double() + m.eps)
        if m.weight is not None:
            scale = scale * m.weight.detach().double()
        return _widen(scale.abs().max())
    if isinstance(m, nn.MaxPool2d) and m.dilation in (1, (1, 1)):
        # each output is 1-Lipschitz in its window; an input lies in at most c windows
        return math.sqrt(_pool_overlap(m.kernel_size, m.stride, 2))
    if isinstance(m, nn.AvgPool2d) and _plain_average(m):
        # entries 1/k: row sums 1, column sums c/k, and ||A||_2 <= sqrt(||A||_1 ||A||_inf)
        k = _pool_overlap(m.kernel_size, 1, 2)  # window size
        return _widen(math.sqrt(_pool_overlap(m.kernel_size, m.stride, 2)) / math.sqrt(k))
    raise UnsupportedOperation(
        f"{type(m).__name__} in the global Lipschitz bound; supported: Linear, Conv2d, "
        "BatchNorm, ReLU-like activations, MaxPool2d, AvgPool2d, Flatten, reshapes, add"
    )


def _scale(node: fx.Node, lip: dict) -> float:
    """|c| for x * c, c * x or x / c with a constant number c."""
    a, b = node.args[:2]
    const = b if a in lip else a
    if not isinstance(const, (int, float)) or (node.target is operator.truediv and a not in lip):
        raise UnsupportedOperation(f"'{node.name}': only scaling by a constant number is supported")
    return abs(1 / const if node.target is operator.truediv else const)


def global_lipschitz(model: nn.Module, input_shape: tuple[int, ...]) -> GlobalLipschitz:
    """A provable upper bound on the L2 Lipschitz constant of ``model`` (inputs ``input_shape``
    per sample), walking its fx graph: products along paths, sums at additions."""
    gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    was_training = gm.training
    gm.eval()
    try:
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    finally:
        gm.train(was_training)
    lip: dict[fx.Node, float] = {}
    layers = []
    for node in gm.graph.nodes:
        deps = [a for a in node.all_input_nodes if a in lip]
        if node.op == "placeholder":
            lip[node] = 1.0
            continue
        if node.op == "output" or not deps:
            continue  # constants do not depend on the input
        shape = (
            tuple(deps[0].meta["tensor_meta"].shape[1:]) if "tensor_meta" in deps[0].meta else ()
        )
        if node.op == "call_module":
            factor = module_norm(gm.get_submodule(node.target), shape)
            lip[node] = factor * lip[deps[0]]
        elif node.target in (operator.add, torch.add, operator.sub, torch.sub):
            lip[node] = sum(lip[d] for d in deps)
        elif node.target in (operator.mul, torch.mul, operator.truediv) and len(deps) == 1:
            lip[node] = _scale(node, lip) * lip[deps[0]]
        elif node.target in (torch.cat, torch.concat):
            lip[node] = math.sqrt(sum(lip[d] ** 2 for d in deps))
        elif node.target in _FUNCTIONS and len(deps) == 1:
            lip[node] = _FUNCTIONS[node.target] * lip[deps[0]]
        elif node.op == "call_method" and node.target in _RESHAPES and len(deps) == 1:
            lip[node] = lip[deps[0]]
        else:
            raise UnsupportedOperation(
                f"'{node.name}' ({node.op} {getattr(node.target, '__name__', node.target)}) in the "
                "global Lipschitz bound"
            )
        layers.append((node.name, lip[node] / lip[deps[0]] if lip[deps[0]] else 0.0))
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    last = None
    if out.op == "call_module" and isinstance(gm.get_submodule(out.target), nn.Linear):
        last = gm.get_submodule(out.target)
    before = lip[out.all_input_nodes[0]] if last is not None else None
    weight = last.weight.detach().double() if last is not None else None
    return GlobalLipschitz(lip[out], tuple(layers), before, weight)

"""Emulated low precision (as Pychop, Carson & Chen 2025, arXiv:2504.07835, and "Exploration of
numerical precision in deep neural networks", Li et al. 2018, arXiv:1805.01078): weights and the
activations entering each Linear / Conv layer rounded to float16, bfloat16 (a cast to the torch
dtype and back: round to nearest even, with the format's range and subnormals) or int8 / int4
(symmetric; weights per output channel, activations per tensor with a scale calibrated on a few
batches), the layers' arithmetic in float32.

Rounding of activations is emulated with a straight-through gradient (the forward pass rounds,
the backward pass is the identity: BPDA, Athalye et al. 2018), so attacks see a usable gradient.
Weights are rounded in place: a weight-rounded model is an ordinary model with exact weights, so
the bound engine certifies it as it is. Activation rounding has no bound rule and is left out of
certification: certified accuracy is that of the weight-rounded model with exact activations.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import set_module, weight_layers


def _straight_through(x: Tensor, rounded: Tensor) -> Tensor:
    return x + (rounded - x).detach()


@dataclass(frozen=True)
class FloatFormat:
    """A floating-point format torch has as a dtype: round to nearest even by a cast and back."""

    name: str
    dtype: torch.dtype
    calibrated = False  # activations need no scale
    rounds_outputs = True  # results are stored in the format too

    def round_weight(self, w: Tensor) -> Tensor:
        return w.to(self.dtype).to(w.dtype)

    def round_activation(self, x: Tensor, scale: float | None = None) -> Tensor:
        return _straight_through(x, x.to(self.dtype).to(x.dtype))


@dataclass(frozen=True)
class IntFormat:
    """Symmetric signed integers of ``bits`` bits (levels -q..q, q = 2^(bits-1) - 1, zero exact):
    weights with one scale per output channel (max |w| / q), activations with one scale per
    tensor (max |x| over calibration batches / q, values beyond clipped); biases stay in float
    (int32 accumulators in practice)."""

    name: str
    bits: int = 8
    calibrated = True
    rounds_outputs = False  # int32 accumulators: the output is dequantised, not rounded

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def round_weight(self, w: Tensor) -> Tensor:
        flat = w.reshape(w.shape[0], -1)
        scale = flat.abs().amax(1, keepdim=True) / self.levels
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(flat / safe).clamp(-self.levels, self.levels) * scale
        return q.reshape(w.shape)

    def round_activation(self, x: Tensor, scale: float | None = None) -> Tensor:
        if scale is None:
            raise RobustlabError(f"{self.name} activations need a calibrated scale; found none")
        if scale == 0:
            return _straight_through(x, torch.zeros_like(x))
        q = torch.round(x / scale).clamp(-self.levels, self.levels) * scale
        return _straight_through(x, q)


FORMATS = {
    "float16": FloatFormat("float16", torch.float16),
    "bfloat16": FloatFormat("bfloat16", torch.bfloat16),
    "int8": IntFormat("int8", 8),
    "int4": IntFormat("int4", 4),
}


def get_format(name: str):
    if name not in FORMATS:
        raise RobustlabError(f"unknown number format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def parse_formats(text: str | list[str] | tuple[str, ...], what: str = "formats") -> list[str]:
    """Format names from ``"float16,int8"`` or a list (``none`` or empty: no format)."""
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n and n != "none"]
    for n in names:
        if n not in FORMATS:
            raise RobustlabError(f"unknown {what} entry {n!r}; known: {', '.join(FORMATS)}, none")
    return names


class Rounded(nn.Module):
    """A layer that computes on rounded inputs and, in a floating format, rounds its output."""

    def __init__(self, inner: nn.Module, fmt, scale: float | None) -> None:
        super().__init__()
        self.inner, self.fmt, self.scale = inner, fmt, scale

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(self.fmt.round_activation(x, self.scale))
        return self.fmt.round_activation(out) if self.fmt.rounds_outputs else out


class _Range(nn.Module):
    """Passes its input through and records its largest magnitude (calibration)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.amax = inner, 0.0

    def forward(self, x: Tensor) -> Tensor:
        self.amax = max(self.amax, float(x.detach().abs().max()))
        return self.inner(x)


def _targets(model: nn.Module, names: list[str] | None) -> list[str]:
    known = [n for n, _ in weight_layers(model)]
    if names is None:
        return known
    for n in names:
        if n not in known:
            raise RobustlabError(f"unknown layer {n!r}; Linear / Conv layers: {', '.join(known)}")
    return list(names)


def round_weights(model: nn.Module, fmt, names: list[str] | None = None) -> nn.Module:
    """A copy of ``model`` with the weights of the named Linear / Conv layers (all by default)
    rounded in place (biases too in a floating format)."""
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n in _targets(out, names):
            m = out.get_submodule(n)
            m.weight.copy_(fmt.round_weight(m.weight))
            if m.bias is not None and not fmt.calibrated:
                m.bias.copy_(fmt.round_weight(m.bias))
    return out


def emulate(
    model: nn.Module,
    fmt,
    names: list[str] | None = None,
    *,
    activations: bool = True,
    calibration: Tensor | None = None,
    batch_size: int = 256,
) -> nn.Module:
    """``model`` in the format ``fmt``: weights of the named layers rounded and, with
    ``activations``, their inputs (and outputs) rounded; integer formats calibrate each input's
    scale on ``calibration`` inputs."""
    targets = _targets(model, names)
    out = round_weights(model, fmt, targets)
    if not activations:
        return out
    scales: dict[str, float | None] = dict.fromkeys(targets)
    if fmt.calibrated:
        if calibration is None or len(calibration) == 0:
            raise RobustlabError(f"{fmt.name} activations need calibration inputs; found none")
        probes = {n: _Range(out.get_submodule(n)) for n in targets}
        for n, p in probes.items():
            set_module(out, n, p)
        with torch.no_grad():
            for i in range(0, len(calibration), batch_size):
                out(calibration[i : i + batch_size])
        for n, p in probes.items():
            set_module(out, n, p.inner)
            scales[n] = p.amax / fmt.levels
    for n in targets:
        set_module(out, n, Rounded(out.get_submodule(n), fmt, scales[n]))
    return out


def weight_error(model: nn.Module, fmt, names: list[str] | None = None) -> dict[str, float]:
    """``||Q(W) - W||^2`` per named layer (weights and, in a floating format, biases)."""
    out = {}
    for n in _targets(model, names):
        m = model.get_submodule(n)
        w = m.weight.detach()
        err = float(((fmt.round_weight(w) - w).double() ** 2).sum())
        if m.bias is not None and not fmt.calibrated:
            b = m.bias.detach()
            err += float(((fmt.round_weight(b) - b).double() ** 2).sum())
        out[n] = err
    return out

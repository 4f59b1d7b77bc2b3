"""Threat models: the set of inputs an adversary may choose around a clean input.

Projection and sampling live here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robustlab.errors import RobustlabError

NORMS = ("inf", "2")


FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class FromData(float):
    """The default value range of an ``LpBall`` (0.0 or 1.0), standing in until a dataset gives
    its own: ``on_data`` replaces it with the data's range; a range given explicitly is a plain
    float and must equal the data's."""

    def __repr__(self) -> str:
        return f"{float(self)!r}"


def parse_eps(text: str | float, name: str = "eps") -> float:
    """One eps: a number (``0.03``) or a fraction (``8/255``)."""
    if isinstance(text, (int, float)):
        return float(text)
    value = text.strip()
    try:
        if value.count("/") == 1:
            num, den = (float(v) for v in value.split("/"))
            if den == 0:
                raise ValueError
            return num / den
        return float(value)
    except ValueError:
        raise RobustlabError(
            f"{name} expects a number or a fraction such as 8/255; found {text!r}", param=name
        ) from None


def parse_eps_list(text: str, name: str = "eps") -> list[float]:
    """``"0.01,2/255,8/255"`` -> floats (numbers or fractions, comma-separated)."""
    return [parse_eps(v, name) for v in str(text).split(",") if v.strip()]


def _eps_limit(norm: str, width: float, numel: int | None) -> float | None:
    """The largest useful eps: the range's width (Linf), its diagonal (L2, ``numel`` known)."""
    if norm == "inf":
        return width
    return None if numel is None else width * math.sqrt(numel)


def check_eps_range(eps: float, norm: str, lower: float, upper: float, numel=None) -> None:
    """An eps larger than the value range allows (likely on the 0-255 scale) is an error that
    suggests eps/255."""
    limit = _eps_limit(norm, upper - lower, numel)
    if limit is None or eps <= limit:
        return
    hint = (
        f"; on the 0-255 scale write {eps:g}/255 (= {eps / 255:.4g})" if eps / 255 <= limit else ""
    )
    where = "the range's width" if norm == "inf" else "the range's diagonal"
    raise RobustlabError(
        f"eps {eps:g} (L{norm}) exceeds {where} {limit:.4g} for values in [{lower:g}, {upper:g}]"
        f"{hint}"
    )


def _check_range(lower: float, upper: float) -> None:
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower >= upper:
        raise RobustlabError(
            f"data range must satisfy lower < upper (finite); found [{lower}, {upper}]"
        )


def parse_norm(norm: str | float | int) -> str:
    """Normalise a norm name: 'inf', 'linf', float('inf') -> 'inf'; 2, 'l2' -> '2'."""
    text = str(norm).lower().removeprefix("l")
    if text in ("inf", "infinity"):
        return "inf"
    if text in ("2", "2.0"):
        return "2"
    raise RobustlabError(f"norm must be one of inf, 2; found {norm!r}")


def _flat_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class LpBall:
    """An Lp ball of radius ``eps`` around each clean input, intersected with the data range.

    Without ``lower`` / ``upper`` the range is the data's (``on_data``; [0, 1] until then)."""

    norm: str
    eps: float
    lower: float = FromData(0.0)
    upper: float = FromData(1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", parse_norm(self.norm))
        if not math.isfinite(self.eps) or self.eps < 0:
            raise RobustlabError(f"eps must be a finite number >= 0; found {self.eps}")
        if self.eps > FLOAT32_MAX:  # inputs are float32 tensors
            raise RobustlabError(
                f"eps must be at most float32's largest number {FLOAT32_MAX:.4g}; found {self.eps}"
            )
        _check_range(self.lower, self.upper)
        if self.range_given:
            check_eps_range(self.eps, self.norm, self.lower, self.upper)

    @property
    def range_given(self) -> bool:
        """Whether the value range was given (else it is the data's)."""
        return not (isinstance(self.lower, FromData) and isinstance(self.upper, FromData))

    def box(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """The smallest axis-aligned box containing the region (what interval bounds start from)."""
        return (x0 - self.eps).clamp(self.lower, self.upper), (x0 + self.eps).clamp(
            self.lower, self.upper
        )

    def project(self, x0: Tensor, x: Tensor) -> Tensor:
        """Map ``x`` into the region around ``x0``.

        Linf: the exact Euclidean projection. L2: projection onto the ball, then clipping to the data
        range; the result lies in both sets (clipping moves each coordinate towards ``x0``).
        """
        delta = x - x0
        if self.norm == "inf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            n = _flat_norm(delta)
            delta = delta * torch.where(n > self.eps, self.eps / n.clamp_min(1e-30), 1.0)
        return (x0 + delta).clamp(self.lower, self.upper)

    def sample(self, x0: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points drawn uniformly from the ball around each x0 (shape n x x0.shape), clipped."""
        shape = (n, *x0.shape)
        if self.norm == "inf":
            u = torch.rand(shape, generator=generator, dtype=x0.dtype, device=x0.device)
            delta = (2 * u - 1) * self.eps
        else:
            g = torch.randn(shape, generator=generator, dtype=x0.dtype, device=x0.device)
            d = g[0].numel()
            g = g.reshape(n, -1)
            r = torch.rand(n, 1, generator=generator, dtype=x0.dtype, device=x0.device) ** (1 / d)
            delta = (g / g.norm(dim=1, keepdim=True).clamp_min(1e-30) * r * self.eps).reshape(shape)
        return (x0.unsqueeze(0) + delta).clamp(self.lower, self.upper)

    def contains(self, x0: Tensor, x: Tensor, tol: float = 1e-6) -> Tensor:
        """Per-sample boolean: ``x`` lies in the region around ``x0`` (with tolerance ``tol``)."""
        delta = (x - x0).flatten(1)
        dist = delta.abs().amax(1) if self.norm == "inf" else delta.norm(dim=1)
        inside = (x.flatten(1) >= self.lower - tol).all(1) & (x.flatten(1) <= self.upper + tol).all(
            1
        )
        return inside & (dist <= self.eps * (1 + tol) + tol)


def _exact(v) -> Tensor:
    """``v`` as a tensor without rounding: tensors keep their dtype, numbers become float64."""
    return v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v))


@dataclass(frozen=True)
class Box:
    """A fixed axis-aligned box ``lower <= x <= upper`` (bounds broadcast against the input)."""

    lower: Tensor | float
    upper: Tensor | float

    def __post_init__(self) -> None:
        lo, hi = torch.as_tensor(self.lower), torch.as_tensor(self.upper)
        if not torch.isfinite(lo).all() or not torch.isfinite(hi).all() or (lo > hi).any():
            raise RobustlabError("box bounds must be finite with lower <= upper")

    def box(self, x0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The box itself in its tensors' dtype (float64 stays float64; Python numbers are float64,
        their exact value), broadcast to ``x0``'s shape and dtype when ``x0`` is given."""
        lo, hi = _exact(self.lower), _exact(self.upper)
        if x0 is not None:
            lo, hi = lo.to(x0).expand_as(x0), hi.to(x0).expand_as(x0)
        return lo, hi

    def project(self, x0: Tensor | None, x: Tensor) -> Tensor:
        """Clip ``x`` to the box (the exact Euclidean projection)."""
        lo, hi = self.box(x)
        return torch.maximum(torch.minimum(x, hi), lo)

    def sample(self, x0: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points drawn uniformly from the box (shape n x x0.shape)."""
        lo, hi = self.box(x0)
        u = torch.rand((n, *x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
        return lo + u * (hi - lo)

    def contains(self, x0: Tensor | None, x: Tensor, tol: float = 1e-6) -> Tensor:
        """Per-sample boolean: ``x`` lies in the box."""
        lo, hi = self.box(x)
        return ((x >= lo - tol) & (x <= hi + tol)).flatten(1).all(1)


ThreatModel = LpBall | Box


def eps_values(eps: Sequence[float | str], name: str = "eps") -> list[float]:
    """A non-empty list of radii (numbers, or fractions such as ``8/255``), each one a valid
    ``LpBall`` radius (finite, >= 0); ``name`` is what an unparsable value's error calls it."""
    values = [parse_eps(e, name) for e in eps]
    if not values:
        raise RobustlabError("eps must be a non-empty list of numbers >= 0; found []", param="eps")
    for e in values:
        LpBall("inf", e)  # raises a RobustlabError naming a bad value
    return values


def on_data(threat: ThreatModel, data) -> ThreatModel:
    """``threat`` on ``data``'s value range: an ``LpBall`` without a range takes the data's, one
    with another range is an error; eps beyond the range (0-255 scale) is an error."""
    if not isinstance(threat, LpBall):
        if isinstance(threat, Box):
            return threat
        raise RobustlabError(
            f"threat model must be an LpBall or a Box; found {type(threat).__name__}"
        )
    lo, hi = float(data.lower), float(data.upper)
    if threat.range_given and (threat.lower, threat.upper) != (lo, hi):
        raise RobustlabError(
            f"the threat model's value range [{threat.lower:g}, {threat.upper:g}] differs from "
            f"the range of data '{data.name}' [{lo:g}, {hi:g}]; leave lower / upper out to use "
            "the data's"
        )
    numel = int(data.x[0].numel()) if len(data) else None
    check_eps_range(threat.eps, threat.norm, lo, hi, numel)
    if threat.range_given:
        return threat
    return LpBall(threat.norm, threat.eps, lo, hi)

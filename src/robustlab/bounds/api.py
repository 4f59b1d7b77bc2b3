"""``compute_bounds``: one entry point for every bound method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import Bounds, graph_of
from robustlab.bounds.ibp import interval_all, spec_bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.errors import RobustlabError
from robustlab.threat import Box, LpBall

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


@dataclass(frozen=True)
class BoundResult:
    """Bounds of ``C @ f(x)`` and, when asked, of every intermediate node (for reuse)."""

    bounds: Bounds
    intermediate: dict[int, Bounds] = field(default_factory=dict, repr=False)


def input_region(region) -> InputRegion:
    """The input region: a ``Box``, or ``(threat, x0)`` with a threat model applied to x0."""
    if isinstance(region, Box):
        lo, hi = region.box()
        return InputRegion(lo, hi)
    if isinstance(region, tuple) and len(region) == 2 and isinstance(region[0], (LpBall, Box)):
        threat, x0 = region
        lo, hi = threat.box(x0)
        if isinstance(threat, LpBall) and threat.norm == "2":
            return InputRegion(lo, hi, x0, threat.eps)
        return InputRegion(lo, hi)
    raise RobustlabError(
        f"expected a Box or (threat model, x0) as region; found {type(region).__name__}"
    )


def _outward(b: Bounds, dtype: torch.dtype, computed: torch.dtype) -> Bounds:
    lo, hi = b.lower.detach(), b.upper.detach()
    lo_c, hi_c = lo.to(dtype), hi.to(dtype)
    if torch.finfo(dtype).eps > torch.finfo(lo.dtype).eps:  # rounding down to a coarser type
        lo_c = torch.where(
            lo_c.to(lo.dtype) > lo, torch.nextafter(lo_c, torch.full_like(lo_c, -torch.inf)), lo_c
        )
        hi_c = torch.where(
            hi_c.to(hi.dtype) < hi, torch.nextafter(hi_c, torch.full_like(hi_c, torch.inf)), hi_c
        )
    return Bounds(lo_c, hi_c)


def compute_bounds(
    model: nn.Module,
    region,
    method: str = "crown",
    C: Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    return_intermediate: bool = False,
    alpha_iterations: int | None = None,
    bound_upper: bool = True,
    stop_when_positive: bool = False,
) -> Bounds | BoundResult:
    """Sound bounds on ``model`` (or on ``C @ model``) over a batched region.

    ``region`` is a ``Box`` with batched bounds or ``(threat, x0)``. ``C`` has shape
    (batch, rows, *output_shape). Bounds are computed in ``dtype`` (float64 by default) and rounded
    outward to the region's dtype. ``bound_upper=False`` computes lower bounds only (the upper
    bounds are then infinite); ``stop_when_positive`` ends alpha-CROWN's optimisation once every
    lower bound is positive.
    """
    if method not in METHODS:
        raise RobustlabError(f"unknown bound method '{method}'; known: {', '.join(METHODS)}")
    given = input_region(region)
    out_dtype = given.lower.dtype if given.lower.is_floating_point() else torch.get_default_dtype()
    lower, upper = given.lower.to(dtype), given.upper.to(dtype)
    center = None if given.center is None else given.center.to(dtype)
    region = InputRegion(lower, upper, center, given.l2_eps)
    if C is not None:
        C = C.to(dtype)
        if C.dim() == 2:
            C = C.expand(lower.shape[0], *C.shape)
    graph = graph_of(model, tuple(lower.shape[1:]))
    with torch.no_grad():
        if method == "ibp":
            all_b = interval_all(graph, lower, upper)
            inter = dict(enumerate(all_b))
            final = all_b[-1] if C is None else spec_bounds(graph, inter, C)
        elif method in ("crown", "crown-ibp"):
            inter_method = "crown" if method == "crown" else "ibp"
            final, inter = crown(
                graph, region, C, intermediate=inter_method, bound_upper=bound_upper
            )
    if method == "alpha-crown":
        kw = {} if alpha_iterations is None else {"iterations": alpha_iterations}
        final, inter = alpha_crown(
            graph,
            region,
            C,
            bound_upper=bound_upper,
            stop_when_positive=stop_when_positive,
            **kw,
        )
    result = _outward(final, out_dtype, dtype)
    if return_intermediate:
        return BoundResult(
            result, {i: Bounds(b.lower.detach(), b.upper.detach()) for i, b in inter.items()}
        )
    return result

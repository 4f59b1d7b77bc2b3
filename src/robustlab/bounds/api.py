"""``compute_bounds``: one entry point for every bound method."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.bounds import rounding
from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import Bounds, graph_of
from robustlab.bounds.ibp import interval_all, spec_bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.plan import FLOAT32_MIN_FAN_IN, float32_pays
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.inputs import as_module
from robustlab.threat import Box, LpBall

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


@dataclass(frozen=True)
class BoundResult(Bounds):
    """What ``compute_bounds`` returns, every call: the bounds of ``C @ f(x)`` (``lower``,
    ``upper``; a ``Bounds``), every node's bounds in ``intermediate`` when asked
    (``return_intermediate=True``; else None), and ``computed_in``, the dtype of the
    computation: float64 where a float32 request fell back (:func:`_float32_pays`)."""

    intermediate: dict[int, Bounds] | None = field(default=None, repr=False)
    computed_in: torch.dtype = torch.float64

    @property
    def bounds(self) -> Bounds:
        """The output bounds alone (what ``BoundResult.bounds`` held before it was one type)."""
        return Bounds(self.lower, self.upper)


def input_region(region) -> InputRegion:
    """The input region, exactly as given: a ``Box`` in its tensors' dtype, or ``(threat, x0)``
    with the threat model applied to x0 in float64 (x0 converts exactly; ``x0 -+ eps`` is rounded
    outward), so a float32 rounding of the region can never move it inward."""
    if isinstance(region, Box):
        lo, hi = region.box()
        return InputRegion(lo, hi)
    if isinstance(region, tuple) and len(region) == 2 and isinstance(region[0], (LpBall, Box)):
        threat, x0 = region
        x64 = x0.double()
        if isinstance(threat, Box):
            lo, hi = threat.box(x64)
            return InputRegion(lo, hi)
        lo = _sub_down(x64, threat.eps).clamp(threat.lower, threat.upper)
        hi = _add_up(x64, threat.eps).clamp(threat.lower, threat.upper)
        if threat.norm == "2":
            return InputRegion(lo, hi, x64, threat.eps)
        return InputRegion(lo, hi)
    raise RobustlabError(
        f"expected a Box or (threat model, x0) as region; found {type(region).__name__}"
    )


def _user_dtype(region, given: InputRegion) -> torch.dtype:
    """The dtype bounds are returned in: the user's (x0's for ``(threat, x0)``, else the box's),
    not the float64 the region is built in."""
    if (
        isinstance(region, tuple)
        and isinstance(region[1], Tensor)
        and region[1].is_floating_point()
    ):
        return region[1].dtype
    return given.lower.dtype if given.lower.is_floating_point() else torch.get_default_dtype()


def _sub_down(x: Tensor, e: float) -> Tensor:
    """``x - e`` rounded down (x float64): the exact error of the rounded difference by TwoSum
    (Knuth), one step down where the rounding went up."""
    s = x - e
    bb = s - x
    err = (x - (s - bb)) + (-e - bb)  # x - e == s + err exactly
    return torch.where(err < 0, torch.nextafter(s, s.new_tensor(-torch.inf)), s)


def _add_up(x: Tensor, e: float) -> Tensor:
    return -_sub_down(-x, e)


def _region_in(given: InputRegion, dtype: torch.dtype) -> InputRegion:
    """The region in the computation's dtype: exact in float64 (a float32 region converts
    exactly), rounded outward to a coarser dtype; an L2 ball keeps its float64 centre."""
    lower = rounding.round_down(given.lower.double(), dtype)
    upper = -rounding.round_down(-given.upper.double(), dtype)
    center = None if given.center is None else given.center.double()
    return InputRegion(lower, upper, center, given.l2_eps)


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


def _widened(b: Bounds, C_err: Tensor, out: Bounds) -> Bounds:
    """Bounds of ``C y`` from those of ``C' y`` (C' = C rounded): ``|C - C'| max|y|`` wider, in
    float64 (|y| from the output's own bounds)."""
    mag = torch.maximum(out.lower.double().abs(), out.upper.double().abs()).flatten(1)
    terms = torch.where(C_err.flatten(2) > 0, C_err.flatten(2) * mag[:, None], 0.0)
    d = terms.sum(-1) * (1 + 1e-12)
    return Bounds(b.lower.double() - d, b.upper.double() + d)


def _float32_pays(graph, given: InputRegion, method: str) -> bool:
    """``plan.float32_pays`` with the rows a CROWN call makes: the neurons that interval bounds
    leave unstable. The float64 interval pass stops as soon as the estimate (every neuron of
    the nodes not reached yet) says float32 cannot pay (oval21: after its second layer)."""
    batch = given.lower.shape[0]
    if not float32_pays(graph, batch, min_fan_in=FLOAT32_MIN_FAN_IN):
        return False  # not even with every neuron unstable, or layers too narrow (ACAS Xu)
    if method == "ibp":
        return True
    plan = graph.plan
    counted = [i for i in plan.needs if not plan.ibp_exact[i] and i != graph.output]
    interval = {0: Bounds(given.lower.double(), given.upper.double())}
    for i, node in enumerate(graph.nodes[1 : max(counted, default=0) + 1], 1):
        interval[i] = rounding.safe_ibp(node.op, *[interval[j] for j in node.inputs])
        if i in counted and not float32_pays(graph, batch, interval):
            return False  # the rows counted so far, every neuron after them: too few
    return True


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
    fallback: bool = True,
    windows: bool = True,
) -> BoundResult:
    """Sound bounds on ``model`` (or on ``C @ model``) over a batched region.

    ``region`` is a ``Box`` with batched bounds or ``(threat, x0)``, taken exactly as given
    (:func:`input_region`; a float32 computation rounds it outward). ``C`` has shape
    (batch, rows, *output_shape). Bounds are computed in ``dtype`` (float64 by default) and rounded
    outward to the region's dtype; a rigorous float32 request is computed in float64 where
    float32 cannot be faster (:func:`_float32_pays`: too few multiply-adds in the passes)
    unless ``fallback=False``. ``bound_upper=False`` computes lower bounds only (the upper
    bounds are then infinite); ``stop_when_positive`` ends alpha-CROWN's optimisation once every
    lower bound is positive. ``windows=False`` keeps every row on a feature map dense instead of
    on its receptive field (the same bounds, slower; for comparisons).

    Returns a :class:`BoundResult` (a ``Bounds``: ``.lower``, ``.upper``), with every node's
    bounds in ``.intermediate`` when ``return_intermediate`` and the dtype computed in.
    """
    method = canonical(method, METHODS)  # alpha_crown: alpha-crown
    if method not in METHODS:
        raise unknown("bound method", method, METHODS)
    model = as_module(model)  # what load_model returns, a module or a path
    given = input_region(region)
    out_dtype = _user_dtype(region, given)
    graph = graph_of(model, tuple(given.lower.shape[1:]))
    if fallback and dtype == torch.float32 and rounding.accounted():
        with torch.no_grad():  # no graph of the interval pass (no cast weights per call)
            pays = _float32_pays(graph, given, method)
        if not pays:
            dtype = torch.float64  # as rigorous, faster here (and tighter): rounded outward below
    region = _region_in(given, dtype)
    lower = region.lower
    C_err = None
    if C is not None:
        if C.dim() == 2:
            C = C.expand(lower.shape[0], *C.shape)
        C64, C = C.double(), C.to(dtype)
        if not torch.equal(C.double(), C64):  # C rounded: bound C y by C' y and |C - C'| |y|
            C_err = (C64 - C.double()).abs()
    with torch.no_grad():
        if method == "ibp":
            all_b = interval_all(graph, lower, region.upper)
            inter = dict(enumerate(all_b))
            final = all_b[-1] if C is None else spec_bounds(graph, inter, C)
        elif method in ("crown", "crown-ibp"):
            inter_method = "crown" if method == "crown" else "ibp"
            final, inter = crown(
                graph,
                region,
                C,
                intermediate=inter_method,
                bound_upper=bound_upper,
                windows=windows,
            )
    if method == "alpha-crown":
        kw = {} if alpha_iterations is None else {"iterations": alpha_iterations}
        final, inter = alpha_crown(
            graph,
            region,
            C,
            bound_upper=bound_upper,
            stop_when_positive=stop_when_positive,
            windows=windows,
            **kw,
        )
    if C_err is not None:
        final = _widened(final, C_err, inter[graph.output] if method != "ibp" else all_b[-1])
    result = _outward(final, out_dtype, dtype)
    kept = None
    if return_intermediate:
        kept = {i: Bounds(b.lower.detach(), b.upper.detach()) for i, b in inter.items()}
    return BoundResult(result.lower, result.upper, kept, dtype)

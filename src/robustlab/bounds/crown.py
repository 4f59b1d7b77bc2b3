"""CROWN: bounds by backward propagation of linear relaxations (Zhang et al. 2018,
arXiv:1811.00866), as generalised to any graph in auto_LiRPA (Xu et al. 2020, arXiv:2002.12920).

Every activation's input gets bounds from its own backward pass (only for neurons that interval
bounds leave unstable: ``intermediate.py``), then one pass bounds ``C @ output``
(``backward.py``); ``intermediate="ibp"`` gives CROWN-IBP (Zhang et al. 2020, arXiv:1906.06316).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustlab.bounds.backward import backward, two_sided
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ibp import spec_bounds
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.rows import identity_rows


def crown(
    graph: BoundGraph,
    region: Bounds,
    C: Tensor | None = None,
    *,
    intermediate: str = "crown",
    bound_upper: bool = True,
    intersect: bool = True,
    in_cone: bool = False,
    windows: bool = True,
) -> tuple[Bounds, dict[int, Bounds]]:
    """CROWN (``intermediate="crown"``) or CROWN-IBP (``"ibp"``) bounds of ``C @ output``.
    ``intersect=False``: no intersection with interval bounds anywhere (auto_LiRPA's CROWN).
    ``in_cone``: intermediate bounds only for the neurons that reach C's rows (the same bounds
    of ``C @ output``; the others keep interval bounds: off where a caller reads them, as
    alpha-CROWN does for its intermediate slopes). ``windows``: as for ``intermediate.refine``."""
    cache: dict = {}
    rows = C if in_cone else None
    bounds = intermediate_bounds(
        graph, region, intermediate, cache=cache, intersect=intersect, C=rows, windows=windows
    )
    lower = region.lower
    out = graph.output
    if C is None:
        shape = graph.nodes[out].shape
        n = math.prod(shape)
        C = identity_rows(shape, torch.arange(n), lower.shape[0], lower)
    C = C.to(lower.dtype)
    if bound_upper:
        final = two_sided(graph, bounds, out, C, cache=cache)
    else:  # lower bounds only (e.g. for certification), half the work
        lb = backward(graph, bounds, out, C, cache=cache)
        final = Bounds(lb, torch.full_like(lb, torch.inf))
    if intersect:
        final = final.intersect(spec_bounds(graph, bounds, C))
    return final, bounds

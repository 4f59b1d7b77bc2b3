"""Property-based soundness suite (hypothesis): small networks drawn from every operation the
bound engine supports (``netgen.OPS``), weights over 1e-4..1e4, regions that are points, tiny
(below float32's resolution), ordinary, huge, or touching ReLU breakpoints exactly, given in
float64 (centres that are not float32 numbers) or float32, as boxes, Linf or L2 balls. Every
method's bounds, in float64 and float32, must contain the float64 network's outputs at samples,
corners and the ends of a short PGD search per output, up to float64 rounding only.

Profiles: ``ci`` (seeded, about a minute at one thread) by default; ``ROBUSTLAB_HYPOTHESIS=long``
for many more examples (random seeds). Statistics of what was drawn (ops, regions):
``pytest tests/bounds/test_property_soundness.py --hypothesis-show-statistics``."""

from __future__ import annotations

import copy
import os

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robustlab.bounds import METHODS, compute_bounds
from robustlab.threat import Box, LpBall

from .netgen import OPS, Net, head, touching

EPS64 = torch.finfo(torch.float64).eps
DTYPES = (torch.float64, torch.float32)
REGION_KINDS = ("point", "tiny", "normal", "huge", "touching")
REACH = {"tiny": (-15, -9), "normal": (-3, 0)}
FAR = 1e12  # the data range of the balls: wide enough never to cut them

_common = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
settings.register_profile("ci", max_examples=150, derandomize=True, **_common)
settings.register_profile("long", max_examples=2500, print_blob=True, **_common)
PROFILE = settings.get_profile(os.environ.get("ROBUSTLAB_HYPOTHESIS", "ci"))
SHAPES = {
    "flat": st.tuples(st.integers(1, 6)),
    "seq": st.tuples(st.integers(1, 3), st.integers(2, 6)),
    "image": st.tuples(st.integers(1, 2), st.integers(2, 5), st.integers(2, 5)),
}


@st.composite
def cases(draw, kind: str):
    """(float32 network, region for compute_bounds, description of the region for checks)."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = draw(SHAPES[kind])
    rkind = draw(st.sampled_from(REGION_KINDS))
    form = "box" if rkind == "touching" else draw(st.sampled_from(["box", "linf", "l2"]))
    f32 = draw(st.booleans())  # the region's numbers: float32 ones, or float64 ones
    event(f"region {rkind} {form} {'float32' if f32 else 'float64'}")
    if rkind == "touching":  # integer centres, the same box at every position of a channel
        per = (shape[0],) + (1,) * (len(shape) - 1)
        centre = torch.randint(-3, 4, per, generator=g).double().expand(shape)
        if draw(st.booleans()):  # at 0: nothing larger than the box hides a narrow neuron
            centre = torch.zeros_like(centre)
        reach = draw(st.sampled_from(["integer", "tiny", "normal"]))
        event(f"touching half-width {reach}")
        if reach == "integer":
            half = torch.randint(0, 3, per, generator=g).double()
        else:
            half = torch.full(per, 10.0 ** draw(st.floats(*REACH[reach])), dtype=torch.float64)
        width = 2 * half.expand(shape)
    else:
        mag = 10.0 ** draw(st.floats(-2, 3) | st.floats(-15, -2))
        centre = torch.randn(shape, generator=g, dtype=torch.float64) * mag
        exponent = {"point": None, "tiny": (-15, -9), "normal": (-3, 0), "huge": (2, 4)}[rkind]
        width = 0.0 if exponent is None else 10.0 ** draw(st.floats(*exponent))
        width = width * torch.rand(shape, generator=g, dtype=torch.float64)
        if draw(st.booleans()):  # some coordinates of zero width
            width = width * (torch.rand(shape, generator=g) < 0.5)
        if form != "box":
            width = width.max().expand(shape)
    if f32:
        centre = centre.float().double()
    lo, hi = centre - width / 2, centre + width / 2
    if form == "box":
        lo, hi = (lo.float(), hi.float()) if f32 else (lo, hi)
        region = Box(lo[None], hi[None])
        info = dict(lo=lo.double(), hi=hi.double(), x0=None, eps=None)
    else:
        eps = float(width.max()) / 2
        x0 = centre.float() if f32 else centre
        region = (LpBall("inf" if form == "linf" else "2", eps, -FAR, FAR), x0[None])
        info = dict(lo=centre - eps, hi=centre + eps, x0=centre, eps=eps, l2=form == "l2")

    blocks, names = [], []
    if rkind == "touching":
        blocks.append(touching(draw, shape, g, centre, width / 2))
        names.append("touching")
        act = OPS["activation"](draw, blocks[-1].shape, g)
        blocks.append(act)
        names.append("activation")
    cur = blocks[-1].shape if blocks else shape
    depth, tries = draw(st.integers(0 if rkind == "touching" else 1, 5)), 0
    while len(names) < depth + 2 * (rkind == "touching") and tries < 3 * depth:
        tries += 1
        name = draw(st.sampled_from(sorted(OPS)))
        block = OPS[name](draw, cur, g)
        if block is not None:
            blocks.append(block)
            names.append(name)
            cur = block.shape
    blocks += head(draw, cur, g)
    for name in set(names):
        event(f"op {name}")
    net = Net(blocks, names).eval()
    use_C = draw(st.booleans())
    m = blocks[-1].shape[0]
    C = torch.randn(1, 2, m, generator=g, dtype=torch.float64) if use_C else None
    return net, shape, region, info, C


def _points(net64, shape, info, m: int) -> torch.Tensor:
    """Samples, corners (or boundary points of an L2 ball) and PGD iterates (float64)."""
    g = torch.Generator().manual_seed(0)
    lo, hi = info["lo"], info["hi"]
    n = lo.numel()
    if info["x0"] is not None and info["l2"]:
        threat = LpBall("2", info["eps"], -FAR, FAR)
        x0 = info["x0"][None]
        d = torch.randn(16, n, generator=g, dtype=torch.float64)
        edge = x0.flatten(1) + info["eps"] * d / d.norm(dim=1, keepdim=True).clamp_min(1e-300)
        pts = [threat.sample(x0, 48, g)[:, 0], edge.reshape(16, *shape)]

        def project(x):
            return threat.project(x0, x)

        def step(grad, t):
            gn = grad.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, *(1,) * len(shape))
            return info["eps"] * 0.5 * 0.8**t * grad / gn
    else:
        u = torch.rand(48, *shape, generator=g, dtype=torch.float64)
        pts = [lo + u * (hi - lo)]
        if n <= 6:
            bits = torch.tensor([[(k >> i) & 1 for i in range(n)] for k in range(2**n)])
        else:
            bits = torch.randint(0, 2, (32, n), generator=g)
        bits = bits.reshape(-1, *shape).bool()
        pts.append(torch.where(bits, hi, lo))

        def project(x):
            return torch.minimum(torch.maximum(x, lo), hi)

        def step(grad, t):
            return (hi - lo) * 0.5 * 0.8**t * grad.sign()

    # PGD: every output pushed up and down from 2 starts each
    rows = torch.arange(2 * m * 2)
    idx, sign = (rows // 2) % m, torch.where(rows < 2 * m, 1.0, -1.0).double()
    x = project(pts[0][rows % len(pts[0])].clone())
    for t in range(12):
        x = x.detach().requires_grad_(True)
        obj = (sign * net64(x).flatten(1)[rows, idx]).sum()
        (grad,) = torch.autograd.grad(obj, x)
        x = project(x.detach() + step(grad, t))
        pts.append(x)
    return torch.cat([p.detach() for p in pts])


def _check(case) -> None:
    net, shape, region, info, C = case
    net64 = copy.deepcopy(net).double()
    m = net.blocks[-1].shape[0]
    pts = _points(net64, shape, info, m)
    with torch.no_grad():
        y = net64(pts).flatten(1)
        top = torch.maximum(info["lo"].abs(), info["hi"].abs())[None]
        tol = (4 * net.terms + 16) * EPS64 * net64.magnitude(top).flatten(1)
    assert torch.isfinite(y).all()
    for method in METHODS:
        for dtype in DTYPES:
            b = compute_bounds(net, region, method, dtype=dtype, alpha_iterations=2)
            lower, upper = b.lower.double().flatten(1), b.upper.double().flatten(1)
            where = f"{method} {dtype} ops {net.names} region {info}"
            assert not (lower.isnan().any() or upper.isnan().any()), where
            low = float((lower - tol - y).max())
            high = float((y - upper - tol).max())
            assert low <= 0 and high <= 0, f"outside by {max(low, high):.3g}: {where}"
            if C is not None:
                bc = compute_bounds(net, region, method, C=C, dtype=dtype, alpha_iterations=2)
                yc = y @ C[0].T
                tc = tol @ C[0].abs().T
                assert (yc >= bc.lower.double() - tc).all(), f"C lower: {where}"
                assert (yc <= bc.upper.double() + tc).all(), f"C upper: {where}"


@settings(PROFILE)
@given(cases("flat"))
def test_flat_networks(case):
    _check(case)


@settings(PROFILE)
@given(cases("seq"))
def test_sequence_networks(case):
    _check(case)


@settings(PROFILE)
@given(cases("image"))
def test_image_networks(case):
    _check(case)

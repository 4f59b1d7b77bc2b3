"""Forward linear bounds (forward.py): the stacked dense step and the batched concretization give
the elementwise formulas' bounds (float64, to rounding), and ReLU nodes take their interval
bounds (the relaxed lines are never tighter); every bound contains sampled values."""

import torch
from torch import nn

from robustlab.bounds.forward import Lin, forward_bounds
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion


def _net() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Linear(5, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 4)
    ).eval()


def _region(n: int = 9) -> InputRegion:
    g = torch.Generator().manual_seed(5)
    c = torch.rand(n, 5, generator=g, dtype=torch.float64)
    w = 10 ** (-2 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    return InputRegion(c - w, c + w)


def _reference(net: nn.Module, region: InputRegion) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Forward linear bounds by the plain formulas (four products per layer, elementwise sums)."""
    lo, hi = region.lower, region.upper
    c, r = (hi + lo) / 2, (hi - lo) / 2
    n, k = c.shape
    wl = wu = torch.eye(k, dtype=lo.dtype).expand(n, k, k)
    bl = bu = torch.zeros_like(lo)
    out, last = [], None
    for layer in net.double():
        if isinstance(layer, nn.Linear):
            wp, wn = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
            wl, wu = wp @ wl + wn @ wu, wp @ wu + wn @ wl
            bl, bu = bl @ wp.T + bu @ wn.T + layer.bias, bu @ wp.T + bl @ wn.T + layer.bias
            low = (wl * c[:, None]).sum(-1) - (wl.abs() * r[:, None]).sum(-1) + bl
            up = (wu * c[:, None]).sum(-1) + (wu.abs() * r[:, None]).sum(-1) + bu
            if last is not None:  # intersected with interval bounds
                low0, up0 = last
                wp_, wn_ = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
                ib_lo = low0 @ wp_.T + up0 @ wn_.T + layer.bias
                ib_hi = up0 @ wp_.T + low0 @ wn_.T + layer.bias
                low, up = torch.maximum(low, ib_lo), torch.minimum(up, ib_hi)
            out.append((low, up))
        else:
            low, up = out[-1]
            unstable = (low < 0) & (up > 0)
            ua = torch.where(unstable, up / (up - low).clamp_min(1e-300), (low >= 0).double())
            ub = torch.where(unstable, -ua * low, torch.zeros_like(low))
            la = torch.where(unstable, (up > -low).double(), (low >= 0).double())
            wl, bl = la[..., None] * wl, la * bl
            wu, bu = ua[..., None] * wu, ua * bu + ub
            last = (low.clamp(min=0), up.clamp(min=0))
            out.append(last)
    return out


def test_forward_bounds_equal_the_plain_formulas():
    net, region = _net(), _region()
    graph = graph_of(net, (5,))
    with torch.no_grad():
        got = forward_bounds(graph, region)
        want = _reference(net, region)
    for i, (lo, hi) in enumerate(want, 1):
        scale = 1e-12 * (1 + float(hi.abs().max() + lo.abs().max()))
        assert torch.allclose(got[i].lower, lo, rtol=0, atol=scale), i
        assert torch.allclose(got[i].upper, hi, rtol=0, atol=scale), i


def test_forward_bounds_contain_samples():
    net, region = _net(), _region(20)
    graph = graph_of(net, (5,))
    b = forward_bounds(graph, region)
    g = torch.Generator().manual_seed(6)
    u = torch.rand(500, *region.lower.shape, generator=g, dtype=torch.float64)
    h = region.lower + (region.upper - region.lower) * u
    for i, layer in enumerate(net.double(), 1):
        h = layer(h)
        assert bool((h >= b[i].lower - 1e-12).all()) and bool((h <= b[i].upper + 1e-12).all())


def test_concretization_broadcasts_one_set_of_lines():
    """Lines shared by the batch (first dimension 1) bound each box of the batch."""
    w = torch.randn(1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    lin = Lin(w, torch.zeros(1, 3, dtype=torch.float64), w, torch.zeros(1, 3, dtype=torch.float64))
    c = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    r = torch.rand(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    b = lin.concrete(c, r)
    want = (w * c[:, None]).sum(-1) - (w.abs() * r[:, None]).sum(-1)
    assert b.lower.shape == (6, 3)
    assert torch.allclose(b.lower, want, rtol=0, atol=1e-12)

import copy

import onnx
import pytest
import torch
from torch import nn

from robustlab._onnx import torch_to_onnx
from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.graph import Bounds, graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.verify import verify
from robustlab.verify.relu_split import Domains, _bound, _relus

from .test_verifier import _bump_instance


def _net(n_in: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).eval()


def _instance(tmp_path, net, n_in, center, eps, threshold):
    """Unsafe when ``y_0 - y_1 <= threshold`` somewhere in the box ``center +- eps``."""
    onnx.save(torch_to_onnx(net, (n_in,)), tmp_path / "n.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(3)]
    for i, c in enumerate(center.tolist()):
        lines += [f"(assert (>= X_{i} {c - eps!r}))", f"(assert (<= X_{i} {c + eps!r}))"]
    lines += [f"(assert (<= (- Y_0 Y_1) {threshold!r}))"]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines))
    return tmp_path / "n.onnx", tmp_path / "p.vnnlib"


def _sampled_min(net, center, eps, n=20000, seed=0) -> float:
    g = torch.Generator().manual_seed(seed)
    x = center + eps * (2 * torch.rand(n, len(center), generator=g) - 1)
    x = torch.cat([x, center + eps * torch.sign(torch.randn(n, len(center), generator=g))])
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=eps / 10)
    best = float("inf")
    for _ in range(30):  # PGD on y0 - y1 from every sample
        y = net(x)
        v = y[:, 0] - y[:, 1]
        best = min(best, float(v.detach().min()))
        opt.zero_grad()
        v.sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.minimum(torch.maximum(x, center - eps), center + eps))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_beta_bounds_contain_every_point_of_the_domain(seed):
    """Random splits and random multipliers: the bound holds for every sampled input that
    satisfies the domain's split constraints."""
    net = _net(6, seed)
    graph = graph_of(net, (6,))
    net = copy.deepcopy(net).double()
    x0 = torch.rand(1, 6, dtype=torch.float64)
    region = InputRegion(x0 - 0.3, x0 + 0.3)
    C = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    _, root = alpha_crown(graph, region, C[None], bound_upper=False, iterations=5)
    root = {k: Bounds(b.lower.detach(), b.upper.detach()) for k, b in root.items()}
    relus = _relus(graph)
    g = torch.Generator().manual_seed(seed)
    n = 8
    x = x0 + 0.3 * (2 * torch.rand(50000, 6, generator=g, dtype=torch.float64) - 1)
    pre, h = [], x  # pre-activations of each ReLU, in order
    for layer in net:
        if isinstance(layer, nn.ReLU):
            pre.append(h.detach())
        h = layer(h)
    v = (h[:, 0] - h[:, 1]).detach()
    # each domain: the signs of a random sample's pre-activations on a random half of the
    # unstable neurons (so that it is not empty)
    seeds = torch.randint(0, len(x), (n,), generator=g)
    signs, betas, alphas = {}, {}, {}
    for (r, j), z in zip(relus.items(), pre, strict=True):
        lo, hi = root[j].lower[0], root[j].upper[0]
        unstable = (lo < 0) & (hi > 0)
        keep = unstable & (torch.rand(n, lo.numel(), generator=g) < 0.5)
        s = torch.where(z[seeds] >= 0, 1, -1).to(torch.int8)
        signs[j] = torch.where(keep, s, torch.zeros_like(s))
        betas[j] = 3 * torch.rand(n, 1, lo.numel(), generator=g, dtype=torch.float64)
        alphas[r] = torch.rand(n, 1, lo.numel(), generator=g, dtype=torch.float64)
    doms = Domains(signs, alphas, betas, torch.full((n, 1), -torch.inf, dtype=torch.float64))
    lb, _, _ = _bound(graph, root, doms, C, iterations=3)
    for i in range(n):
        ok = torch.ones(len(x), dtype=torch.bool)
        for z, j in zip(pre, relus.values(), strict=True):
            s = signs[j][i].double()
            ok &= ((z * s) >= 0).all(1)
        assert ok.any()
        assert float(v[ok].min()) >= float(lb[i, 0]) - 1e-9
    assert (signs[j] != 0).any()


@pytest.mark.parametrize("seed,eps", [(0, 0.08), (1, 0.08), (2, 0.12)])
def test_relu_split_answers_agree_with_attacks(tmp_path, seed, eps):
    """Thresholds just below the attacked minimum need branching to be proved; just above it,
    the property is violated."""
    n_in = 20
    net = _net(n_in, seed)
    g = torch.Generator().manual_seed(seed)
    center = torch.rand(n_in, generator=g)
    y = net(center[None])[0].detach()
    best = _sampled_min(net, center, eps)
    # thresholds: one just below the attacked minimum (likely holds), one above it (violated)
    for threshold, known in (
        (best - 0.05 * abs(float(y[0] - y[1])) - 1e-3, None),
        (best + 1e-3, "violated"),
    ):
        onnx_path, spec = _instance(tmp_path, net, n_in, center, eps, threshold)
        r = verify(onnx_path, spec, timeout=30)
        assert r.strategy == "relu-split"
        if known == "violated":
            assert r.verdict != "holds"
        if r.verdict == "violated":
            x = torch.tensor(r.counterexample["x"])
            assert ((x - center).abs() <= eps + 1e-6).all()
            out = net(x[None])[0].detach()
            assert float(out[0] - out[1]) <= threshold + 1e-5
        else:
            assert r.verdict == "holds" and r.stats["domains"] > 1, r


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_counterexample_is_never_called_holds_by_relu_split(tmp_path, seed):
    onnx_path, spec = _bump_instance(tmp_path, 24, seed, 0.05, 1.0, True)
    r = verify(onnx_path, spec, timeout=15)
    assert r.strategy == "relu-split" and r.verdict != "holds"

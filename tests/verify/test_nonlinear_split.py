import copy
import time

import pytest
import torch
from torch import nn

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.graph import Bounds, graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.verify import verify
from robustlab.verify.nonlinear_split import Domains, _bound, activations

from ..tolerance import rounding_atol
from .test_relu_split import _instance, _sampled_min
from .test_verifier import _bump_net


def _net(n_in: int, seed: int, act=nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_in, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 3)
    ).eval()


@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.ReLU])
@pytest.mark.parametrize("seed", range(3))
def test_bounds_contain_every_point_of_the_domain(seed, act):
    """Random sub-intervals and random multipliers: each domain's bound holds for every sampled
    input whose neurons lie in the domain's intervals."""
    net = _net(6, seed, act)
    graph = graph_of(net, (6,))
    net = copy.deepcopy(net).double()
    x0 = torch.rand(1, 6, dtype=torch.float64)
    region = InputRegion(x0 - 0.4, x0 + 0.4)
    C = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    _, root = alpha_crown(graph, region, C[None], bound_upper=False, iterations=5)
    root = {k: Bounds(b.lower.detach(), b.upper.detach()) for k, b in root.items()}
    acts = activations(graph)
    g = torch.Generator().manual_seed(seed)
    n = 8
    x = x0 + 0.4 * (2 * torch.rand(50000, 6, generator=g, dtype=torch.float64) - 1)
    pre, h = [], x  # the inputs of each activation, in order
    for layer in net:
        if isinstance(layer, act):
            pre.append(h.detach())
        h = layer(h)
    v = (h[:, 0] - h[:, 1]).detach()
    # each domain: a random sample's neuron values, with intervals cut around them on a random
    # half of the neurons (so that the domain is not empty)
    seeds = torch.randint(0, len(x), (n,), generator=g)
    lo, hi, beta_lo, beta_hi, alphas = {}, {}, {}, {}, {}
    for (r, j), z in zip(acts.items(), pre, strict=True):
        rl, ru = root[j].lower.reshape(1, -1), root[j].upper.reshape(1, -1)
        cut = torch.rand(n, rl.shape[1], generator=g) < 0.5
        zs = z[seeds]
        new_lo = zs - torch.rand(n, rl.shape[1], generator=g, dtype=torch.float64) * (zs - rl)
        new_hi = zs + torch.rand(n, rl.shape[1], generator=g, dtype=torch.float64) * (ru - zs)
        lo[j] = torch.where(cut, new_lo, rl.expand(n, -1))
        hi[j] = torch.where(cut, new_hi, ru.expand(n, -1))
        beta_lo[j] = 3 * torch.rand(n, 1, rl.shape[1], generator=g, dtype=torch.float64)
        beta_hi[j] = 3 * torch.rand(n, 1, rl.shape[1], generator=g, dtype=torch.float64)
        if graph.nodes[r].op.has_alpha:
            alphas[r] = torch.rand(n, 1, rl.shape[1], generator=g, dtype=torch.float64)
    doms = Domains(
        {k: t.clone() for k, t in lo.items()},
        {k: t.clone() for k, t in hi.items()},
        alphas,
        beta_lo,
        beta_hi,
        torch.full((n, 1), -torch.inf, dtype=torch.float64),
    )
    lb, _, _ = _bound(graph, root, doms, C, iterations=3)
    for i in range(n):
        ok = torch.ones(len(x), dtype=torch.bool)
        for z, j in zip(pre, acts.values(), strict=True):
            ok &= ((z >= lo[j][i]) & (z <= hi[j][i])).all(1)
        assert ok.any()
        assert float(v[ok].min()) >= float(lb[i, 0]) - 1e-9


def test_a_network_without_relu_gets_a_verdict(tmp_path):
    """A tanh network with 20 inputs: branching on the tanh inputs proves a threshold that
    CROWN alone cannot; forcing relu-split (no ReLU to split) does not crash either."""
    n_in, seed, eps = 20, 2, 0.2
    net = _net(n_in, seed)
    g = torch.Generator().manual_seed(seed)
    center = torch.rand(n_in, generator=g)
    y = net(center[None])[0].detach()
    best = _sampled_min(net, center, eps)
    threshold = best - 0.2 * abs(float(y[0] - y[1])) - 1e-3
    onnx_path, spec = _instance(tmp_path, net, n_in, center, eps, threshold)
    r = verify(onnx_path, spec, timeout=60)
    assert r.strategy == "nonlinear-split" and r.verdict == "holds", r
    assert r.stats["proved_by"] == "nonlinear-split" and r.stats["domains"] > 1
    forced = verify(onnx_path, spec, timeout=20, strategy="relu-split")
    assert forced.verdict in ("holds", "timeout", "unknown"), forced
    onnx_path, spec = _instance(tmp_path, net, n_in, center, eps, best + 1e-3)
    r = verify(onnx_path, spec, timeout=30)
    assert r.verdict == "violated"
    x = torch.tensor(r.counterexample["x"])
    assert ((x - center).abs() <= eps + 1e-6).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_sigmoid_network_with_a_planted_counterexample_is_never_called_holds(tmp_path, seed):
    import onnx

    from robustlab._onnx import torch_to_onnx

    n = 24
    g = torch.Generator().manual_seed(seed)
    center = (torch.rand(n, generator=g) * 0.8 + 0.1).tolist()
    bump = _bump_net(center, 0.05, 1.0, False)
    net = nn.Sequential(*bump, nn.Sigmoid())  # above sigmoid(0.5) only near the centre
    onnx.save(torch_to_onnx(net, (n,)), tmp_path / "s.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))" for i in range(n)]
    lines += ["(assert (>= Y_0 0.6224593312018546))"]  # sigmoid(0.5)
    (tmp_path / "s.vnnlib").write_text("\n".join(lines))
    r = verify(tmp_path / "s.onnx", tmp_path / "s.vnnlib", timeout=6)
    assert r.strategy == "nonlinear-split" and r.verdict != "holds", r


class _Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


@pytest.mark.parametrize("above", [False, True])
def test_activations_with_two_slopes_per_neuron_branch(above):
    """sin keeps its optimisable slopes as (lower, upper) on a last axis: branching sets them up
    per row without a shape error, and a verdict never contradicts sampling and PGD."""
    import time

    from robustlab.verify.nonlinear_split import nonlinear_split
    from robustlab.verify.spec import Disjunct, Property

    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 8), _Sin(), nn.Linear(8, 3)).eval()
    center, eps = torch.zeros(4), 0.3
    low = _sampled_min(net, center, eps)
    t = low + 0.5 if above else low - 0.05  # reachable, or (probably) not
    C = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    prop = Property(
        (center - eps).double(), (center + eps).double(), (Disjunct(C, torch.tensor([t]).double()),)
    )
    verdict, x = nonlinear_split(
        graph_of(net, (4,)), prop, (4,), net, deadline=time.monotonic() + 20
    )
    if verdict == "violated":  # the search's own float32 forward pass, in another batch shape
        with torch.no_grad():
            y = net(x.float()[None])[0]
        assert float(y[0] - y[1]) <= t + rounding_atol(8 * (float(y.abs().max()) + 1), 64)
    assert verdict != "holds" or not above


# ---------------------------------------------------------------- step functions (sign)


def test_a_step_is_split_in_three_at_its_breakpoint():
    """[-1, 2] -> z < 0 (open at 0), z = 0, z > 0 (open at 0); [0, 2] -> z = 0, z > 0; a
    smooth activation's interval still in two."""
    from robustlab.verify.nonlinear_split import _children, _resolved

    def doms(lo, hi, step=True):
        t = torch.tensor([[lo, hi]], dtype=torch.float64)
        o = {1: torch.zeros(1, 1, dtype=torch.bool)} if step else {}
        return Domains({1: t[:, :1].clone()}, {1: t[:, 1:].clone()}, {}, {}, {},
                       torch.zeros(1, 1), o, {k: v.clone() for k, v in o.items()})  # fmt: skip

    kids = _children(doms(-1.0, 2.0), [(1, 0)])
    assert kids.lo[1].reshape(-1).tolist() == [-1.0, 0.0, 0.0]
    assert kids.hi[1].reshape(-1).tolist() == [0.0, 0.0, 2.0]
    assert kids.open_hi[1].reshape(-1).tolist() == [True, False, False]
    assert kids.open_lo[1].reshape(-1).tolist() == [False, False, True]
    assert _resolved(kids.lo[1], kids.hi[1], kids.open_lo[1], kids.open_hi[1]).all()
    kids = _children(doms(0.0, 2.0), [(1, 0)])
    assert kids.lo[1].reshape(-1).tolist() == [0.0, 0.0] and len(kids) == 2
    kids = _children(doms(-1.0, 2.0, step=False), [(1, 0)])
    assert kids.hi[1].reshape(-1).tolist() == [0.0, 2.0] and len(kids) == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_strict_sign_is_the_constant_on_open_sides_and_sound_elsewhere(dtype):
    from robustlab.verify.nonlinear_split import StrictSign

    g = torch.Generator().manual_seed(0)
    n = 400
    l = -torch.rand(n, generator=g, dtype=torch.float64) * 2
    u = torch.rand(n, generator=g, dtype=torch.float64) * 2
    kind = torch.randint(0, 4, (n,), generator=g)
    u = torch.where(kind == 1, torch.zeros_like(u), u)  # [l, 0), open
    l = torch.where(kind == 2, torch.zeros_like(l), l)  # (0, u], open
    l = torch.where(kind == 3, torch.zeros_like(l), l)  # [0, u], closed
    op = StrictSign(open_lo=(kind == 2)[:, None], open_hi=(kind == 1)[:, None])
    lo, hi = l[:, None].to(dtype), u[:, None].to(dtype)
    la, lb, ua, ub = op.relax(lo, hi)
    t = torch.rand(n, 2000, generator=g, dtype=torch.float64)
    z = l[:, None] + t * (u - l)[:, None]
    z[:, 0], z[:, 1] = l, u
    inside = torch.where(
        (kind == 1)[:, None], z < 0, torch.where((kind == 2)[:, None], z > 0, True)
    )
    s = torch.sign(z)
    low, up = la.double() * z + lb.double(), ua.double() * z + ub.double()
    assert ((low <= s) | ~inside).all() and ((s <= up) | ~inside).all()
    assert (
        (la[kind == 1] == 0).all() and (lb[kind == 1] == -1).all() and (ub[kind == 1] == -1).all()
    )
    assert (ua[kind == 2] == 0).all() and (lb[kind == 2] == 1).all() and (ub[kind == 2] == 1).all()
    b = op.ibp(Bounds(lo, hi))
    assert (b.lower[kind == 2] == 1).all() and (b.upper[kind == 1] == -1).all()
    assert (b.lower[kind == 3] == 0).all()  # sign(0) = 0 is kept where 0 is not excluded


def _step_net(tmp_path, weights, bias, out, lows, highs, threshold):
    """x (k) -> Gemm -> Sign -> Gemm: the unsafe set y_0 <= threshold over the box."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    k = len(lows)
    c = {"W1": np.asarray(weights, np.float32), "b1": np.asarray(bias, np.float32),
         "W2": np.asarray(out, np.float32)[:, None], "b2": np.zeros(1, np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
        helper.make_node("Sign", ["h"], ["s"]),
        helper.make_node("Gemm", ["s", "W2", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "step", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v, n) for n, v in c.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    (tmp_path / "n.onnx").write_bytes(proto.SerializeToString())
    lines = [f"(declare-const X_{i} Real)" for i in range(k)] + ["(declare-const Y_0 Real)"]
    for i in range(k):
        lines += [f"(assert (>= X_{i} {lows[i]!r}))", f"(assert (<= X_{i} {highs[i]!r}))"]
    lines.append(f"(assert (<= Y_0 {threshold!r}))")
    (tmp_path / "p.vnnlib").write_text("\n".join(lines))
    return tmp_path / "n.onnx", tmp_path / "p.vnnlib"


def test_the_value_at_the_breakpoint_is_never_lost(tmp_path):
    """y = sign(x) on [-1, 0.7] with the unsafe set -0.5 <= y <= 0.5: reached at x = 0 only
    (sign(0) = 0), which the three-way split keeps as a domain of its own: never `holds`."""
    onnx_path, spec = _step_net(tmp_path, [[1.0]], [0.0], [1.0], [-1.0], [0.7], 0.5)
    spec.write_text(spec.read_text() + "\n(assert (>= Y_0 -0.5))")
    r = verify(onnx_path, spec, timeout=5, strategy="nonlinear-split")
    assert r.verdict != "holds", r.summary()
    if r.verdict == "violated":
        assert r.counterexample["x"] == [0.0]


@pytest.mark.parametrize("threshold", [-3.5, -2.5, -1.5])
def test_step_network_verdicts_agree_with_enumeration(tmp_path, threshold):
    """y = -s(x) - s(x + 0.5) + s(x - 0.5) on [-1, 1] is piecewise constant with breakpoints
    -0.5, 0, 0.5: enumerated exactly (a fine grid and every breakpoint); `holds` exactly where
    the minimum is above the threshold, a counterexample otherwise."""
    import numpy as np

    xs = np.concatenate([np.linspace(-1, 1, 40001), [-0.5, 0.0, 0.5]])
    s = np.sign(np.stack([xs, xs + 0.5, xs - 0.5], 1))
    low = float((s @ np.array([-1.0, -1.0, 1.0])).min())
    onnx_path, spec = _step_net(
        tmp_path, [[1.0, 1.0, 1.0]], [0.0, 0.5, -0.5], [-1.0, -1.0, 1.0], [-1.0], [1.0], threshold
    )
    r = verify(onnx_path, spec, timeout=10, strategy="nonlinear-split")
    if low <= threshold:
        assert r.verdict == "violated", r.summary()
    else:
        assert r.verdict == "holds", r.summary()


def test_a_relaxation_that_cannot_be_proven_is_unknown_not_an_error(monkeypatch):
    """A rule that refuses its interval (a softmax's reciprocal overflowing on a domain, as on
    two vit instances) makes the search `unknown`, never an error verdict."""
    import robustlab.verify.nonlinear_split as ns
    from robustlab.errors import RobustlabError
    from robustlab.verify import root
    from robustlab.verify.spec import Disjunct, Property

    net = _net(4, 0)
    graph = graph_of(net, (4,))
    C = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    prop = Property(
        torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
        (Disjunct(C, torch.tensor([100.0], dtype=torch.float64)),),
    )  # fmt: skip

    def refuse(*args, **kwargs):
        raise RobustlabError("reciprocal at node 'r' overflows float64 on these bounds")

    for module, name in ((ns, "_search"), (root, "alpha_crown")):  # root: the search's start
        with monkeypatch.context() as m:
            m.setattr(module, name, refuse)
            verdict, _ = ns.nonlinear_split(graph, prop, (4,), net, deadline=time.monotonic() + 5)
        assert verdict == "unknown"

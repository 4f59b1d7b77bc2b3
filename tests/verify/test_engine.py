import gzip
import threading
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from robustlab import deadline as dl
from robustlab._onnx import torch_to_onnx
from robustlab.verify import branch_regions, engine, read_vnnlib, region_bounds, verify, verify_spec
from robustlab.verify.oracle import OnnxOracle

W = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]], dtype=np.float32)  # (3, 2)


class _Flat(nn.Module):
    """A two-input, two-output model written over ONE flat input, in VNN-LIB order:
    X_0..X_2 are input a (1, 3), X_3..X_4 input b (1, 2); Y_0..Y_1 = a @ W, Y_2..Y_3 = 2 b - 1."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2, bias=False)
        self.lin.weight.data = torch.from_numpy(W.T.copy())

    def forward(self, x):
        a, b = x[:, :3], x[:, 3:]
        return torch.cat([torch.relu(self.lin(a)), 2 * b - 1], 1)


def _two_io_onnx() -> bytes:
    """The same model as ONNX with two declared inputs and two outputs."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2])
    inits = [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("MatMul", ["a", "W"], ["m"]),
        helper.make_node("Relu", ["m"], ["p"]),
        helper.make_node("Mul", ["b", "two"], ["t"]),
        helper.make_node("Sub", ["t", "one"], ["q"]),
    ]
    graph = helper.make_graph(nodes, "two_io", [a, b], [p, q], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


def _spec(tmp_path, body: str, nx=5, ny=4, box=(0.0, 1.0)):
    lines = [f"(declare-const X_{i} Real)" for i in range(nx)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(ny)]
    lines += [f"(assert (>= X_{i} {box[0]}))\n(assert (<= X_{i} {box[1]}))" for i in range(nx)]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n" + body)
    return read_vnnlib(tmp_path / "p.vnnlib")


def test_the_oracle_splits_a_flat_input_into_the_declared_inputs():
    oracle = OnnxOracle(_two_io_onnx(), 5)
    assert [p.name for p in oracle.ports] == ["a", "b"]
    x = torch.tensor([0.3, 0.7, 0.1, 0.25, 0.9])
    with torch.no_grad():
        expected = _Flat()(x[None])[0].double().numpy()
    np.testing.assert_allclose(oracle(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy", ["auto", "relu-split", "bounds"])
def test_several_inputs_and_outputs_in_vnnlib_order(tmp_path, strategy):
    model, oracle = _Flat().eval(), OnnxOracle(_two_io_onnx(), 5)
    end = time.monotonic() + 30
    # Y_3 = 2 X_4 - 1 reaches 0.9 only when X_4 >= 0.95: a violation found in input b
    spec = _spec(tmp_path, "(assert (>= Y_3 0.9))")
    verdict, cex, _, _ = verify_spec(model, (5,), spec, oracle, deadline=end, strategy=strategy)
    assert verdict == "violated" and cex["x"][4] >= 0.95 and cex["y"][3] >= 0.9
    # Y_0 = relu(X_0 + 0.5 X_1 - X_2) <= 1.5 on the unit box: never above 1.6
    spec = _spec(tmp_path, "(assert (>= Y_0 1.6))")
    verdict, cex, _, _ = verify_spec(model, (5,), spec, oracle, deadline=end, strategy=strategy)
    assert verdict == "holds" and cex is None


def test_gzipped_onnx_and_vnnlib(tmp_path):
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    (tmp_path / "n.onnx.gz").write_bytes(
        gzip.compress(torch_to_onnx(net, (2,)).SerializeToString())
    )
    with torch.no_grad():
        top = float(net(torch.rand(1000, 2)).max())
    text = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
    text += "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
    (tmp_path / "p.vnnlib.gz").write_bytes(
        gzip.compress((text + f"(assert (>= Y_0 {top}))").encode())
    )
    r = verify(tmp_path / "n.onnx.gz", tmp_path / "p.vnnlib.gz", timeout=30)
    assert r.verdict == "violated", r
    (tmp_path / "bad.onnx.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    r = verify(tmp_path / "bad.onnx.gz", tmp_path / "p.vnnlib.gz", timeout=30)
    assert r.verdict == "error" and "not a valid gzip file" in r.message


def _tiling(tmp_path, net, n: int, bump: float | None):
    """n boxes tiling X_0 in [0, 1] (X_1 in [0, 1]), each unsafe when Y_0 exceeds its own
    ceiling: the box's sampled maximum plus a margin, or (for the box ``bump``) its maximum."""
    xs = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    parts = []
    for k in range(n):
        g = torch.rand(256, 2, dtype=torch.float64)
        g[:, 0] = xs[k] + g[:, 0] * (xs[k + 1] - xs[k])
        with torch.no_grad():
            top = float(net(g.float()).max())
        ceiling = top - 1e-4 if bump is not None and k == bump else top + 0.5
        parts.append(
            f"(and (>= X_0 {float(xs[k])!r}) (<= X_0 {float(xs[k + 1])!r}) (>= Y_0 {ceiling!r}))"
        )
    text = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
    text += "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (or\n" + "\n".join(parts) + "))\n"
    (tmp_path / "tiles.vnnlib").write_text(text)
    return tmp_path / "tiles.vnnlib"


@pytest.mark.parametrize("bump", [None, 1234])
def test_a_large_property_is_verified_as_batches_of_regions(tmp_path, bump):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).eval()
    onnx.save(torch_to_onnx(net, (2,)), tmp_path / "n.onnx")
    r = verify(tmp_path / "n.onnx", _tiling(tmp_path, net, 2000, bump), timeout=120)
    assert r.stats["regions"] == 2000
    if bump is None:
        assert r.verdict == "holds" and r.stats["proved_by"] in ("crown", "alpha-crown"), r
    else:
        assert r.verdict == "violated", r
        x0 = r.counterexample["x"][0]
        assert bump / 2000 <= x0 <= (bump + 1) / 2000


def test_a_short_timeout_on_a_large_network_is_kept(tmp_path):
    """One CROWN pass on this network takes longer than the timeout: the answer still comes
    within the timeout plus 2 s, loading and conversion included."""
    torch.manual_seed(0)
    n_in, w = 64, 3000
    net = nn.Sequential(
        nn.Linear(n_in, w),
        nn.ReLU(),
        nn.Linear(w, w),
        nn.ReLU(),
        nn.Linear(w, w),
        nn.ReLU(),
        nn.Linear(w, 4),
    )
    onnx.save(torch_to_onnx(net, (n_in,)), tmp_path / "wide.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(4)]
    lines += [f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))" for i in range(n_in)]
    (tmp_path / "wide.vnnlib").write_text("\n".join(lines) + "\n(assert (>= Y_0 1000))")
    for timeout in (1.0, 5.0):
        start = time.monotonic()
        r = verify(tmp_path / "wide.onnx", tmp_path / "wide.vnnlib", timeout=timeout)
        assert time.monotonic() - start < timeout + 2.0, r
        assert r.verdict in ("timeout", "holds"), r


@pytest.mark.slow
def test_bounds_over_their_share_leave_the_time_to_attacks(tmp_path, monkeypatch):
    """A bound pass that outlasts BOUNDS_SHARE of the time is cut off; the rest goes to attacks,
    which find a counterexample that the first short attack was not given the time for."""

    def slow(*args, **kwargs):
        while True:
            dl.check()
            time.sleep(0.01)

    calls = []
    real = engine.falsify_regions
    earlier = set(threading.enumerate())  # other tests' abandoned verify threads, still running

    def falsify(model, shape, spec, regions, oracle, seconds, rounds, seed, stats):
        if threading.current_thread() in earlier:
            return real(model, shape, spec, regions, oracle, seconds, rounds, seed, stats)
        calls.append(seconds)
        if len(calls) == 1:
            return None  # the first attack misses
        return real(model, shape, spec, regions, oracle, seconds, rounds, seed, stats)

    monkeypatch.setattr(engine, "bound_regions", slow)
    monkeypatch.setattr(engine, "falsify_regions", falsify)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1)).eval()
    onnx.save(torch_to_onnx(net, (20,)), tmp_path / "n.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(20)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))" for i in range(20)]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n(assert (>= Y_0 -1000))")
    start = time.monotonic()
    r = verify(tmp_path / "n.onnx", tmp_path / "p.vnnlib", timeout=6.0)
    assert r.verdict == "violated" and r.stats["bounds_s"] == "over share", r
    assert len(calls) == 2 and calls[1] > 1.0  # about half the time was left to attack
    assert time.monotonic() - start < 6.0
    (tmp_path / "p.vnnlib").write_text("\n".join(lines) + "\n(assert (>= Y_0 1000))")
    r = verify(tmp_path / "n.onnx", tmp_path / "p.vnnlib", timeout=4.0)
    assert r.verdict == "timeout" and r.stats["bounds_s"] == "over share", r


def test_input_splitting_on_a_reduced_graph_starts_from_the_engine_pass(monkeypatch):
    """On a region with fixed inputs (embed.reduce builds a new graph per caller), the engine's
    forward pass is kept in its root.RootCache and serves hold_margin's (the search bounds its
    root again here: its children start from the root's intermediate bounds, which a one-box
    pass does not keep): two one-box passes where the region holds at the root, three without
    the cache; with parents' bounds not reused, one."""
    from robustlab.bounds.graph import graph_of
    from robustlab.verify import bab, embed, root
    from robustlab.verify.bab import BabStats
    from robustlab.verify.spec import Disjunct, Property

    from ..bounds.test_cut import _gan

    net = _gan("transposed")
    graph = graph_of(net, (4,))
    lo = torch.tensor([0.1, -0.2, 0.3, 0.3], dtype=torch.float64)
    hi = lo + torch.tensor([0.05, 0.05, 0.0, 0.0], dtype=torch.float64)
    with torch.no_grad():
        y0 = float(net(((lo + hi) / 2).float()[None])[0, 0])
    C = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    prop = Property(lo, hi, (Disjunct(C, torch.tensor([y0 - 10.0], dtype=torch.float64)),))
    calls = []
    real = bab.bound_boxes
    monkeypatch.setattr(
        bab, "bound_boxes", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k)
    )
    for cache in (root.RootCache(graph), None):
        calls.clear()
        region_bounds.forward_bound(graph, net, prop, (4,), C, prop.disjuncts[0].d, cache)
        how = ("input-split", "forward")
        verdict = branch_regions.branch(
            graph, prop, (4,), net, float("inf"), how, BabStats(), None, cache
        )
        assert verdict == ("holds", None)
        assert calls == ([1, 1] if cache is not None else [1, 1, 1])
    cache = root.RootCache(graph)
    red = embed.reduce(graph, net, prop, (4,))
    calls.clear()
    region_bounds.forward_bound(graph, net, prop, (4,), C, prop.disjuncts[0].d, cache)
    margin = bab.hold_margin(red.graph, red.prop, (2,), intermediate="forward", cache=cache)
    steps = bab.search_steps(
        red.graph, red.prop, (2,), red.model, intermediate="forward", margin=margin,
        reuse_parent=False, cache=cache,
    )  # fmt: skip
    assert bab.portfolio([steps], float("inf")) == ("holds", None) and calls == [1]


def test_input_splitting_in_the_mixed_mode_splits_without_look_ahead(monkeypatch):
    """Forward bounds with CROWN's rows at a cut that pays (cost.mixed_mode) make every box
    dear: the forward search splits the "smart" input alone; elsewhere it looks ahead."""
    from robustlab.bounds.graph import graph_of
    from robustlab.verify import bab, cost
    from robustlab.verify.bab import BabStats
    from robustlab.verify.spec import Disjunct, Property

    from ..bounds.test_cut import _gan

    seen = []
    monkeypatch.setattr(bab, "search_steps", lambda *a, **k: seen.append(k["lookahead"]))
    monkeypatch.setattr(bab, "portfolio", lambda searches, end, shares=None: ("timeout", None))
    mlp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    for net, mixed in ((_gan("transposed"), True), (mlp, False)):
        graph = graph_of(net, (4,) if mixed else (5,))
        assert cost.mixed_mode(graph) is mixed
        n_in = 4 if mixed else 5
        lo = torch.zeros(n_in, dtype=torch.float64)
        C = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
        prop = Property(lo, lo + 0.1, (Disjunct(C, torch.zeros(1, dtype=torch.float64)),))
        seen.clear()
        margin = torch.zeros(1, dtype=torch.float64)
        branch_regions.input_split(graph, prop, (n_in,), net, 0.0, "forward", BabStats(), margin)
        assert seen == ([1] if mixed else [2])

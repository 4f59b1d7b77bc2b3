"""``holds`` only from sound bounds with a margin scaled to the bounded quantity (issue 25)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from robustlab._onnx import torch_to_onnx
from robustlab.bounds import compute_bounds
from robustlab.bounds.graph import graph_of
from robustlab.threat import Box
from robustlab.verify import verify
from robustlab.verify.bab import hold_margin
from robustlab.verify.disjuncts import infeasible
from robustlab.verify.margins import HOLD_ULPS, UNIT
from robustlab.verify.spec import Disjunct, Property

STRATEGIES = ("auto", "input-split", "relu-split", "bounds")


def _verify(onnx_path, spec, **kw):
    """``verify`` with torch's global generator seeded: model.py's load check measures the output
    scale at unseeded random inputs, and with outputs near 1e9 that are 0 at most inputs its
    verdict (load error or not) depends on the draw."""
    torch.manual_seed(0)
    return verify(onnx_path, spec, **kw)


def _narrow_relu_instance(tmp_path, e: float, k: float, threshold: float):
    """Y = k relu(x0 - x1 + ... - x7 - 7.5 e) on X_i in [-e, e]: its maximum is k e / 2 (at
    alternating corners), unsafe when Y >= threshold."""
    first, second = nn.Linear(8, 1), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[(-1.0) ** i for i in range(8)]]))
        first.bias.fill_(-7.5 * e)
        second.weight.fill_(k)
    net = nn.Sequential(first, nn.ReLU(), second)
    onnx_path = tmp_path / "narrow.onnx"
    onnx.save(torch_to_onnx(net, (8,)), onnx_path)
    lines = [f"(declare-const X_{i} Real)" for i in range(8)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (<= X_{i} {e!r}))\n(assert (>= X_{i} {-e!r}))" for i in range(8)]
    lines += [f"(assert (>= Y_0 {threshold!r}))"]
    spec = tmp_path / "narrow.vnnlib"
    spec.write_text("\n".join(lines))
    return onnx_path, spec


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("e,k", [(5e-14, 4e9), (2e-14, 1e10), (3e-13, 7e8)])
def test_unstable_relu_narrower_than_1e_12_is_never_holds(tmp_path, strategy, e, k):
    """The issue's reproduction and variants: the maximum k e / 2 lies above the threshold
    (0.9 of it); CROWN with a width floor of 1e-12 bounded it below and answered holds."""
    threshold = 0.9 * k * e / 2
    onnx_path, spec = _narrow_relu_instance(tmp_path, e, k, threshold)
    r = _verify(onnx_path, spec, timeout=30, strategy=strategy)
    assert r.verdict in ("violated", "unknown"), r
    if r.verdict == "violated":  # the counterexample, re-checked here with onnxruntime
        x = np.array(r.counterexample["x"], dtype=np.float32)
        assert (np.abs(x.astype(np.float64)) <= e).all()
        sess = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
        (y,) = sess.run(None, {name: x.reshape(shape)})
        assert float(y.reshape(-1)[0]) >= threshold


def test_a_threshold_above_the_maximum_holds(tmp_path):
    """Not over-cautious: 10% above the maximum is proved (the margin is far smaller)."""
    e, k = 5e-14, 4e9
    onnx_path, spec = _narrow_relu_instance(tmp_path, e, k, 1.1 * k * e / 2)
    assert _verify(onnx_path, spec, timeout=30, strategy="bounds").verdict == "holds"


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_margin_follows_the_scale_of_outputs_and_inputs(scale):
    """The margin is HOLD_ULPS units of float32 of |d| + |C| max|y| + |A| max|x|: scaling the
    network's outputs by s scales it by s (a fixed 1e-6 x max(1, |d|) did not)."""
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]) * scale)
        lin.bias.copy_(torch.tensor([1.0, -2.0]) * scale)
    prop = Property(
        torch.tensor([-1.0, 0.0], dtype=torch.float64),
        torch.tensor([1.0, 2.0], dtype=torch.float64),
        (Disjunct(torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.zeros(1).double()),),
    )
    m = hold_margin(graph_of(lin, (2,)), prop, (2,))
    y_max = (
        torch.tensor([3.0, 4.5], dtype=torch.float64) * scale
    )  # y0 in [-3, 3], y1 in [-2.5, 4.5]
    a_term = 1.5 * 1.0 + 4.0 * 2.0  # |C W| . max|x|
    expected = HOLD_ULPS * UNIT * (y_max.sum() + a_term * scale)
    assert torch.allclose(m, expected.reshape(1), rtol=1e-9)


def test_a_bound_below_float32_noise_is_not_holds(tmp_path):
    """y0 - y1 = 0.0625 exactly (one float32 unit at 1e6), yet float32 evaluation of y0 and y1
    near 1.5e6 rounds them together at a quarter of the inputs: the exact bound 0.0625 cleared a
    margin of 1e-6 x max(1, |d|); the scaled margin (~3) does not take it as a proof, and verify
    answers with a counterexample onnxruntime confirms."""
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.fill_(1e6)
        lin.bias.copy_(torch.tensor([1000000.0625, 1000000.0]))
    net = nn.Sequential(lin)
    C = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)  # unsafe: y1 - y0 >= 0, i.e. -y0 + y1 <= 0
    prop = Property(
        torch.zeros(1).double(), torch.ones(1).double(), (Disjunct(-C, torch.zeros(1).double()),)
    )
    lb = compute_bounds(net, Box(prop.lower[None], prop.upper[None]), "crown", C=-C[None]).lower
    assert float(lb) == 0.0625  # the exact minimum of y0 - y1
    margin = hold_margin(graph_of(net, (1,)), prop, (1,))
    assert 0.0625 < float(margin) < 10
    assert not infeasible(lb.double(), torch.zeros(1).double(), [slice(0, 1)], margin).any()
    onnx_path = tmp_path / "close.onnx"
    onnx.save(torch_to_onnx(net, (1,)), onnx_path)
    spec = tmp_path / "close.vnnlib"
    spec.write_text(
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
        "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (<= Y_0 Y_1))"
    )
    r = _verify(onnx_path, spec, timeout=10, strategy="bounds")
    assert r.verdict == "violated" and r.counterexample["y"][0] <= r.counterexample["y"][1]

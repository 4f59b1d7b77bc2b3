"""Surrogate gradients for attacks on sign networks: the outputs are the network's own (bit for
bit), gradients flow through sign and a final softmax, and the verifier's verdicts on a small
binarized network agree with sampling (planted counterexamples are found; `holds` only where no
sampled input violates)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from robustlab._onnx import onnx_to_torch
from robustlab.verify import verify
from robustlab.verify.surrogate import (
    compares_outputs,
    logit_view,
    sign_ste,
    with_surrogate_gradients,
)

N_IN, HIDDEN, N_OUT = 6, 12, 3


def _sign_net(seed: int) -> bytes:
    """Gemm, Sign, Gemm, Sign(Sign(.) + 0.01) (a binarized layer as Larq exports it), Gemm,
    Softmax."""
    rng = np.random.default_rng(seed)
    c = {
        "W1": rng.normal(size=(N_IN, HIDDEN)), "b1": rng.normal(size=HIDDEN) * 0.3,
        "W2": rng.normal(size=(HIDDEN, HIDDEN)), "b2": rng.normal(size=HIDDEN),
        "W3": rng.normal(size=(HIDDEN, N_OUT)), "b3": rng.normal(size=N_OUT), "eps": [0.01],
    }  # fmt: skip
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"]),
        helper.make_node("Sign", ["h1"], ["s1"]),
        helper.make_node("Gemm", ["s1", "W2", "b2"], ["h2"]),
        helper.make_node("Sign", ["h2"], ["t2"]),
        helper.make_node("Add", ["t2", "eps"], ["u2"]),
        helper.make_node("Sign", ["u2"], ["s2"]),
        helper.make_node("Gemm", ["s2", "W3", "b3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "sign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N_OUT])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in c.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return proto.SerializeToString()


def _module(raw: bytes) -> nn.Module:
    import onnx

    return onnx_to_torch(onnx.load_model_from_string(raw))[0]


@pytest.mark.parametrize("seed", range(3))
def test_outputs_are_unchanged_and_gradients_flow(seed):
    gm = _module(_sign_net(seed))
    sur = with_surrogate_gradients(gm)
    assert sur is not gm and with_surrogate_gradients(gm) is sur  # cached
    x = torch.randn(64, N_IN, requires_grad=True)
    y0, y1 = gm(x), sur(x)
    assert torch.equal(y0, y1)
    (g0,) = torch.autograd.grad((y0[:, 0] - y0[:, 1]).sum(), x)
    (g1,) = torch.autograd.grad((y1[:, 0] - y1[:, 1]).sum(), x)
    assert g0.abs().max() == 0 and g1.abs().max() > 0


def test_a_network_without_steps_is_returned_as_is():
    net = nn.Sequential(nn.Linear(3, 2))
    assert with_surrogate_gradients(net) is net


def test_an_inner_softmax_keeps_its_gradient():
    class Attn(nn.Module):
        def forward(self, x):
            return torch.softmax(x, 1) * x

    gm = torch.fx.symbolic_trace(Attn())
    assert with_surrogate_gradients(gm) is gm


def _sampled(raw: bytes, x0: np.ndarray, eps: float, label: int, n: int = 20000):
    """The sampled points (random and corners) whose top class is not ``label``."""
    rng = np.random.default_rng(0)
    u = rng.uniform(-1, 1, (n, N_IN))
    u[: n // 2] = np.sign(u[: n // 2])
    x = (x0 + eps * u).astype(np.float32)
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {"x": x[i : i + 1]})[0] for i in range(0, n, 1)])
    return (y.argmax(1) != label).any()


def _instance(tmp_path, raw, x0, eps, label):
    (tmp_path / "n.onnx").write_bytes(raw)
    lines = [f"(declare-const X_{i} Real)" for i in range(N_IN)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(N_OUT)]
    for i, c in enumerate(x0):
        lo, hi = float(c - eps), float(c + eps)
        lines += [f"(assert (>= X_{i} {lo!r}))", f"(assert (<= X_{i} {hi!r}))"]
    others = [f"(and (>= Y_{j} Y_{label}))" for j in range(N_OUT) if j != label]
    lines.append(f"(assert (or {' '.join(others)}))")
    (tmp_path / "p.vnnlib").write_text("\n".join(lines))
    return tmp_path / "n.onnx", tmp_path / "p.vnnlib"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_verdicts_on_a_sign_network_agree_with_sampling(tmp_path, seed):
    raw = _sign_net(seed)
    x0 = np.random.default_rng(seed + 5).normal(size=N_IN)
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    label = int(sess.run(None, {"x": x0[None].astype(np.float32)})[0].argmax())
    for eps in (0.02, 0.5, 2.0):
        violated = _sampled(raw, x0, eps, label, n=4000)
        r = verify(*_instance(tmp_path, raw, x0, eps, label), timeout=20)
        assert r.verdict != "error", r.summary()
        if r.verdict == "holds":
            assert not violated, (eps, r.summary())
        if r.verdict == "violated":
            x = np.asarray(r.counterexample["x"], np.float32)
            assert sess.run(None, {"x": x[None]})[0].argmax() != label
            assert np.all(np.abs(x - x0) <= eps + 1e-6)
        if violated:  # a planted counterexample that sampling reaches: the attack must too
            assert r.verdict == "violated", (eps, r.summary())


def test_compares_outputs():
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, -2.0]], dtype=torch.float64)
    assert compares_outputs(C, torch.zeros(2, dtype=torch.float64))
    assert not compares_outputs(C, torch.tensor([0.0, 0.5], dtype=torch.float64))  # a threshold
    assert not compares_outputs(torch.tensor([[1.0, -2.0, 0.0]]), torch.zeros(1))  # a ratio
    assert not compares_outputs(torch.tensor([[1.0, -1.0, 1.0]]), torch.zeros(1))
    assert not compares_outputs(torch.zeros(0, 3), torch.zeros(0))


def test_logit_view_drops_the_final_softmax_only_for_comparisons():
    gm = _module(_sign_net(0))
    x = torch.randn(16, N_IN)
    C = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], dtype=torch.float64)
    view = logit_view(gm, C, torch.zeros(2, dtype=torch.float64), x[:1])
    assert view is not None
    assert torch.allclose(torch.softmax(view(x).double(), 1), gm(x).double(), atol=1e-6)
    (g,) = torch.autograd.grad(view(x.requires_grad_())[:, 0].sum(), x)
    assert g.abs().max() > 0  # straight-through signs below the logits
    assert logit_view(gm, C, torch.tensor([0.0, 0.3], dtype=torch.float64), x[:1]) is None
    assert logit_view(nn.Sequential(nn.Linear(N_IN, 3)), C, torch.zeros(2), x[:1]) is None


def test_a_softmax_over_part_of_the_outputs_gets_no_logit_view():
    class Two(nn.Module):
        def forward(self, x):
            return torch.softmax(x.reshape(-1, 2, 2), 2).reshape(-1, 4)

    gm = torch.fx.symbolic_trace(Two())
    C = torch.tensor([[1.0, 0.0, -1.0, 0.0]], dtype=torch.float64)
    assert logit_view(gm, C, torch.zeros(1, dtype=torch.float64), torch.randn(1, 4)) is None


def test_sign_window_is_the_batch_spread():
    x = torch.tensor([[-1.0, 3.0, 0.5], [1.0, 4.0, 0.25]], requires_grad=True)
    (g,) = torch.autograd.grad(sign_ste(x).sum(), x)
    # spreads (2, 1, 0.25): entry 1 (3..4) cannot reach zero by its spread, only the leak
    w_mean = (2.0 + 1.0 + 0.25) / 3
    assert torch.allclose(g[:, 1], torch.full((2,), 0.01 / w_mean))
    assert torch.allclose(g[:, 0], torch.full((2,), 1.01 / w_mean))
    one = torch.tensor([[-1.0, 3.0]], requires_grad=True)
    (g1,) = torch.autograd.grad(sign_ste(one).sum(), one)
    assert torch.allclose(g1, torch.tensor([[1.01, 0.01]]) / 2.0)  # mean |x| for one sample


def _saturated_net(scale: float, c: float, delta: float) -> bytes:
    """z_0 = scale |x_0 - c| (two ReLUs), z_1 = scale delta, Softmax: y_1 >= y_0 only on the
    band |x_0 - c| <= delta, and float32 probabilities are 0 or 1 everywhere else."""
    W1 = np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)  # (2 inputs, 2 hidden)
    b1 = np.array([-c, c], np.float32)
    W2 = np.array([[scale, 0.0], [scale, 0.0]], np.float32)
    b2 = np.array([0.0, scale * delta], np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "b2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    consts = {"W1": W1, "b1": b1, "W2": W2, "b2": b2}
    graph = helper.make_graph(
        nodes, "sat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return proto.SerializeToString()


def test_a_saturated_softmax_counterexample_is_found_on_the_logits(tmp_path):
    """The unsafe band holds no corner and 0.6% of the box; on the probabilities every
    margin outside it is the same 1, so an attack on them never sees progress."""
    c, delta = 0.37, 3e-3
    raw = _saturated_net(1000.0, c, delta)
    gm = _module(raw)
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    assert logit_view(gm, C, torch.zeros(1, dtype=torch.float64), torch.rand(1, 2)) is not None
    (tmp_path / "n.onnx").write_bytes(raw)
    lines = ["(declare-const X_0 Real)", "(declare-const X_1 Real)"]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += ["(assert (>= X_0 0.0))", "(assert (<= X_0 1.0))"]
    lines += ["(assert (>= X_1 0.0))", "(assert (<= X_1 1.0))", "(assert (>= Y_1 Y_0))"]
    (tmp_path / "p.vnnlib").write_text("\n".join(lines))
    r = verify(tmp_path / "n.onnx", tmp_path / "p.vnnlib", timeout=20, strategy="bounds")
    assert r.verdict == "violated", r.summary()
    x = np.asarray(r.counterexample["x"], np.float32)
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x[None]})[0][0]
    assert y[1] >= y[0] and abs(float(x[0]) - c) <= 2 * delta

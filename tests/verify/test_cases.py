"""Data-dependent indexing (case variables): a patch mask placed at a position read from the
input, as in cctsdb_yolo. The converted module agrees with onnxruntime at every position; the
verifier's case split answers `holds` only where no sampled input violates, and finds planted
counterexamples, both with the image fixed (cells are points) and with the image in a box
(cells go to the bound engine on the augmented network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustlab._onnx import onnx_to_torch
from robustlab.verify import verify
from robustlab.verify.cases import case_nodes

N = 6  # pixels; the input is the pixels, then the position


def _patch_net(weights: np.ndarray) -> bytes:
    """y = W (x * mask(p)) + 0.1 * range[p] with mask(p) zero at the pixel trunc(p) (ScatterND
    at a data-dependent index) and range[p] a Slice at a data-dependent start."""
    c = {
        "ones": np.ones(N, np.float32), "zero": np.zeros(1, np.float32),
        "W": weights.astype(np.float32), "ramp": np.arange(N, dtype=np.float32),
        "s0": np.array([0]), "sN": np.array([N]), "sP": np.array([N]), "one": np.array([1]),
        "ax": np.array([0]), "tenth": np.array([0.1], np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Slice", ["x", "s0", "sN", "ax"], ["img"]),
        helper.make_node("Gather", ["x", "sP"], ["pf"], axis=0),
        helper.make_node("Cast", ["pf"], ["p"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["p", "one"], ["p1"]),
        helper.make_node("Add", ["p1", "one"], ["p2"]),
        helper.make_node("Unsqueeze", ["p1", "ax"], ["idx"]),
        helper.make_node("ScatterND", ["ones", "idx", "zero"], ["mask"]),
        helper.make_node("Mul", ["img", "mask"], ["masked"]),
        helper.make_node("MatMul", ["W", "masked"], ["lin"]),
        helper.make_node("Slice", ["ramp", "p1", "p2", "ax"], ["sel"]),
        helper.make_node("Mul", ["sel", "tenth"], ["bias"]),
        helper.make_node("Add", ["lin", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "patch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N + 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in c.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return proto.SerializeToString()


def _weights(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, N))


def _run(onnx: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"x": xi.astype(np.float32)})[0] for xi in x])


def test_converted_module_agrees_with_onnxruntime_at_every_position():
    import onnx

    raw = _patch_net(_weights(0))
    gm, shape = onnx_to_torch(onnx.load_model_from_string(raw))
    assert shape == (N + 1,) and len(case_nodes(gm)) == 2
    rng = np.random.default_rng(1)
    x = rng.random((40, N + 1)).astype(np.float32)
    x[:, N] = rng.uniform(0, N - 0.01, 40).astype(np.float32)
    x[:3, N] = [0.0, N - 1, 2.999]
    with torch.no_grad():
        got = gm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _run(raw, x), rtol=1e-5, atol=1e-5)


def _instance(tmp_path: Path, raw: bytes, center, eps: float, positions, threshold: float):
    """The property "y_0 >= threshold" is violated (unsafe: y_0 <= threshold - 0)."""
    (tmp_path / "n.onnx").write_bytes(raw)
    lines = [f"(declare-const X_{i} Real)" for i in range(N + 1)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(2)]
    for i, c in enumerate(center):
        lo, hi = float(c - eps), float(c + eps)
        lines += [f"(assert (>= X_{i} {lo!r}))", f"(assert (<= X_{i} {hi!r}))"]
    lo, hi = float(positions[0]), float(positions[1])
    lines += [f"(assert (>= X_{N} {lo!r}))", f"(assert (<= X_{N} {hi!r}))"]
    lines.append(f"(assert (<= Y_0 {float(threshold)!r}))")
    (tmp_path / "p.vnnlib").write_text("\n".join(lines))
    return tmp_path / "n.onnx", tmp_path / "p.vnnlib"


def _sampled_min(raw: bytes, center, eps: float, positions, n: int = 4000) -> float:
    rng = np.random.default_rng(3)
    x = np.empty((n, N + 1))
    x[:, :N] = center + eps * rng.uniform(-1, 1, (n, N))
    x[:, N] = rng.uniform(positions[0], positions[1], n)
    x[: N + 1, N] = np.clip(np.arange(N + 1), *positions)  # every integer position
    return float(_run(raw, x)[:, 0].min())


@pytest.mark.parametrize("eps", [0.0, 0.05])
@pytest.mark.parametrize("seed", range(3))
def test_case_split_verdicts_agree_with_sampling(tmp_path, seed, eps):
    """Thresholds just below and just above the sampled minimum of y_0 over the positions:
    `holds` below (never where a sample violates), a counterexample above."""
    raw = _patch_net(_weights(seed))
    center = np.random.default_rng(seed + 10).random(N)
    positions = (0.0, N - 1.0)
    low = _sampled_min(raw, center, eps, positions)
    for threshold, expect in ((low - 0.3, "holds"), (low + 1e-3, "violated")):
        onnx_path, spec = _instance(tmp_path, raw, center, eps, positions, threshold)
        r = verify(onnx_path, spec, timeout=30)
        if r.verdict == "holds":
            assert threshold < low
        if expect == "violated":
            assert r.verdict == "violated", r.summary()
            x = np.asarray(r.counterexample["x"])
            assert _run(raw, x[None])[0, 0] <= threshold + 1e-6
            assert positions[0] <= x[N] <= positions[1]
        else:  # points: decided by evaluation; boxes: by the bound engine per cell
            assert r.verdict == "holds", r.summary()


def test_the_worst_position_is_found_among_many(tmp_path):
    """Only one integer position violates: the split must reach it (attacks on a
    piecewise-constant input rarely do)."""
    w = np.ones((2, N))
    raw = _patch_net(w)
    center = np.full(N, 0.5)
    center[4] = 3.0  # masking pixel 4 lowers y_0 most
    ys = _run(raw, np.concatenate([np.tile(center, (N, 1)), np.arange(N)[:, None]], 1))[:, 0]
    assert int(np.argmin(ys)) == 4
    threshold = float((np.sort(ys)[0] + np.sort(ys)[1]) / 2)
    onnx_path, spec = _instance(tmp_path, raw, center, 0.0, (0.0, N - 0.5), threshold)
    r = verify(onnx_path, spec, timeout=30)
    assert r.verdict == "violated" and int(r.counterexample["x"][N]) == 4
    onnx_path, spec = _instance(tmp_path, raw, center, 0.0, (0.0, 3.9), threshold)
    assert verify(onnx_path, spec, timeout=30).verdict == "holds"

"""Property-based fuzzing of ONNX loading (hypothesis): truncated and mutated protobufs of real and
small models (plain and gzipped), random small graphs of the supported operations, unknown domains
and opsets, dynamic shapes. Every case either loads (and then agrees with onnxruntime: load_model
checks it) or ends in a RobustlabError with one line; never another exception.

Profiles: ``ci`` (seeded, derandomized, well under a minute at one thread) by default;
``ROBUSTLAB_FUZZ=long`` for many more cases."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from robustlab._onnx import torch_to_onnx
from robustlab.errors import RobustlabError, UnsupportedOperation
from robustlab.model import load_model

from ..conftest import SHARED

settings.register_profile(
    "ci", max_examples=80, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
settings.register_profile(
    "long", max_examples=2000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
PROFILE = "long" if os.environ.get("ROBUSTLAB_FUZZ") == "long" else "ci"


def _load_bytes(tmp: Path, data: bytes, name: str = "m.onnx") -> str:
    """load_model on a file with ``data``: 'ok', or the error's one line (a RobustlabError)."""
    path = tmp / name
    path.write_bytes(data)
    try:
        load_model(path)
        message = "ok"
    except RobustlabError as e:
        message = str(e)
        assert message and "\n" not in message.strip(), message
    log = os.environ.get("ROBUSTLAB_FUZZ_LOG")  # outcomes of a long run, one line each
    if log:
        with open(log, "a") as f:
            f.write(message.replace(str(path), "FILE")[:120] + "\n")
    return message


def _small_models() -> list[bytes]:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2)
    )
    out = [torch_to_onnx(mlp.eval(), (4,)), torch_to_onnx(cnn.eval(), (1, 4, 4))]
    models = [m.SerializeToString() for m in out]
    real = SHARED / "benchmarks" / "test" / "test_small.onnx"
    if real.is_file():
        models.append(real.read_bytes())
    return models


MODELS = _small_models()


@settings(settings.get_profile(PROFILE))
@given(
    which=st.integers(0, len(MODELS) - 1),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=6),
    zipped=st.booleans(),
)
def test_truncated_and_mutated_protobufs(tmp_path_factory, which, cut, flips, zipped) -> None:
    data = bytearray(MODELS[which])
    for where, mask in flips:
        i = min(int(where * len(data)), len(data) - 1)
        data[i] ^= mask
    data = bytes(data[: max(1, int(round(cut * len(data)))) if cut < 1 else len(data)])
    if zipped:
        packed = gzip.compress(data)
        data = packed[: len(packed) - 3] if cut < 0.05 else packed  # a truncated gzip too
    _load_bytes(tmp_path_factory.mktemp("mut"), data)


# ----------------------------------------------------------------------------- random graphs

_UNARY = [
    "Relu",
    "Sigmoid",
    "Tanh",
    "Abs",
    "Neg",
    "Sin",
    "Cos",
    "Erf",
    "Sign",
    "Exp",
    "Sqrt",
    "Log",
    "Reciprocal",
    "Softplus",
    "Floor",
]  # fmt: skip  (the last two: unsupported)
_BINARY = ["Add", "Sub", "Mul", "Div", "Min", "Max", "Pow"]


class _Graph:
    """A graph under construction: nodes, initializers, the current value and its shape."""

    def __init__(self, dims: list) -> None:
        self.nodes, self.inits, self.k = [], [], 0
        self.cur, self.shape = "x", [1 if isinstance(d, str) else d for d in dims]
        self.values = [("x", list(self.shape))]

    def const(self, array: np.ndarray) -> str:
        name = f"c{self.k}"
        self.k += 1
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def add(self, op: str, inputs: list[str], shape: list[int], **attrs) -> None:
        name = f"v{self.k}"
        self.k += 1
        self.nodes.append(helper.make_node(op, inputs, [name], **attrs))
        self.cur, self.shape = name, shape
        self.values.append((name, list(shape)))


@st.composite
def _step(draw, g: _Graph) -> None:
    rank, shape = len(g.shape), g.shape
    kind = draw(st.sampled_from(["unary", "binary_const", "binary_dyn", "matmul", "transpose",
                                 "reshape", "slice", "concat", "reduce", "softmax", "clip",
                                 "gather", "unsqueeze", "spatial"]))  # fmt: skip
    if kind == "unary":
        g.add(draw(st.sampled_from(_UNARY)), [g.cur], shape)
    elif kind == "binary_const":
        k = draw(st.integers(0, rank))
        cshape = [draw(st.sampled_from([1, d])) for d in shape[rank - k :]]
        c = draw(st.floats(0.25, 2.0)) * np.ones(cshape, np.float32)
        op = draw(st.sampled_from(_BINARY))
        order = [g.cur, g.const(c)] if draw(st.booleans()) else [g.const(c), g.cur]
        g.add(op, order, shape)
    elif kind == "binary_dyn":
        same = [n for n, s in g.values if s == shape]
        other = draw(st.sampled_from(same))
        g.add(draw(st.sampled_from(_BINARY[:6])), [g.cur, other], shape)
    elif kind == "matmul" and rank >= 1:
        m = draw(st.integers(1, 4))
        w = np.random.default_rng(g.k).normal(size=(shape[-1], m)).astype(np.float32)
        g.add("MatMul", [g.cur, g.const(w)], [*shape[:-1], m] if rank > 1 else [m])
    elif kind == "transpose" and rank >= 2:
        perm = draw(st.permutations(range(rank)))
        g.add("Transpose", [g.cur], [shape[p] for p in perm], perm=list(perm))
    elif kind == "reshape":
        n = int(np.prod(shape))
        target = draw(st.sampled_from([[1, -1], [-1], [n, 1], [1, n, 1]]))
        out = [n if t == -1 else t for t in target]
        if target == [1, -1]:
            out = [1, n]
        g.add("Reshape", [g.cur, g.const(np.array(target, np.int64))], out)
    elif kind == "slice" and rank >= 1:
        axis = draw(st.integers(0, rank - 1))
        size = shape[axis]
        start = draw(st.integers(-size, size - 1))
        step = draw(st.sampled_from([1, 2, -1]))
        r = range(*slice(start, None if step > 0 else -size - 1, step).indices(size))
        if len(r) == 0:
            return
        ends = np.array([np.iinfo(np.int64).max if step > 0 else np.iinfo(np.int64).min])
        ins = [g.cur, g.const(np.array([start], np.int64)), g.const(ends.astype(np.int64)),
               g.const(np.array([axis], np.int64)), g.const(np.array([step], np.int64))]  # fmt: skip
        out = list(shape)
        out[axis] = len(r)
        g.add("Slice", ins, out)
    elif kind == "concat" and rank >= 1:
        axis = draw(st.integers(0, rank - 1))
        out = list(shape)
        out[axis] *= 2
        g.add("Concat", [g.cur, g.cur], out, axis=axis)
    elif kind == "reduce" and rank >= 1:
        axes = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1)))
        keep = draw(st.booleans()) or len(axes) == rank
        out = (
            [1 if a in axes else d for a, d in enumerate(shape)]
            if keep
            else [d for a, d in enumerate(shape) if a not in axes]
        )
        op = draw(st.sampled_from(["ReduceMean", "ReduceMax", "ReduceMin"]))
        g.add(op, [g.cur], out, axes=axes, keepdims=int(keep))
    elif kind == "softmax" and rank >= 1:
        g.add("Softmax", [g.cur], shape, axis=draw(st.integers(-rank, rank - 1)))
    elif kind == "clip":
        lo = draw(st.floats(-1, 0.5))
        ins = [g.cur, g.const(np.array(lo, np.float32)), g.const(np.array(lo + 0.5, np.float32))]
        g.add("Clip", ins, shape)
    elif kind == "gather" and rank >= 1:
        axis = draw(st.integers(0, rank - 1))
        idx = draw(st.lists(st.integers(-shape[axis], shape[axis] - 1), min_size=1, max_size=3))
        out = [*shape[:axis], len(idx), *shape[axis + 1 :]]
        g.add("Gather", [g.cur, g.const(np.array(idx, np.int64))], out, axis=axis)
    elif kind == "unsqueeze" and rank <= 3:
        axis = draw(st.integers(0, rank))
        g.add("Unsqueeze", [g.cur, g.const(np.array([axis], np.int64))],
              [*shape[:axis], 1, *shape[axis:]])  # fmt: skip
    elif kind == "spatial" and rank == 4 and shape[0] == 1 and min(shape[2:]) >= 2:
        op = draw(st.sampled_from(["Conv", "ConvTranspose", "MaxPool", "AveragePool", "Resize"]))
        c = shape[1]
        if op == "Conv":
            w = np.random.default_rng(g.k).normal(size=(2, c, 2, 2)).astype(np.float32)
            g.add(op, [g.cur, g.const(w)], [1, 2, shape[2] - 1, shape[3] - 1])
        elif op == "ConvTranspose":
            w = np.random.default_rng(g.k).normal(size=(c, 2, 2, 2)).astype(np.float32)
            g.add(op, [g.cur, g.const(w)], [1, 2, 2 * shape[2], 2 * shape[3]], strides=[2, 2])
        elif op == "Resize":
            scales = g.const(np.array([1, 1, 2, 2], np.float32))
            g.add(op, [g.cur, "", scales], [1, c, 2 * shape[2], 2 * shape[3]], mode="linear")
        else:
            g.add(op, [g.cur], [1, c, shape[2] - 1, shape[3] - 1], kernel_shape=[2, 2])


@st.composite
def _graphs(draw) -> onnx.ModelProto:
    dims = draw(st.sampled_from([[1, 4], ["N", 3], [5], [1, 2, 3, 3], ["batch", 1, 4, 4], [2, 3]]))
    g = _Graph(dims)
    for _ in range(draw(st.integers(1, 5))):
        draw(_step(g))
        if int(np.prod(g.shape)) > 4096 or len(g.shape) > 5:
            break
    if g.cur == "x":
        g.add("Relu", ["x"], g.shape)
    graph = helper.make_graph(
        g.nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(g.cur, TensorProto.FLOAT, None)], initializer=g.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _runs_in_onnxruntime(model: onnx.ModelProto) -> bool:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        s = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
        s.run(None, {"x": np.random.rand(*dims).astype(np.float32)})
        return True
    except Exception:  # noqa: BLE001 - an invalid graph is a case too
        return False


@settings(settings.get_profile(PROFILE))
@given(model=_graphs())
def test_random_graphs_load_and_agree_or_refuse(tmp_path_factory, model) -> None:
    result = _load_bytes(tmp_path_factory.mktemp("g"), model.SerializeToString())
    unsupported = {n.op_type for n in model.graph.node} & {"Softplus", "Floor"}
    if result != "ok" and _runs_in_onnxruntime(model) and not unsupported:
        pytest.fail(f"a valid graph was refused: {result}\n{onnx.printer.to_text(model.graph)}")
    assert "disagrees with onnxruntime" not in result


@settings(settings.get_profile(PROFILE))
@given(
    domain=st.sampled_from(["", "ai.onnx", "com.microsoft", "ai.onnx.ml", "x.y"]),
    op=st.sampled_from(["Relu", "Gelu", "FusedConv", "Softplus", "NoSuchOp", "Relu6"]),
    opset=st.integers(1, 25),
    extra_domain=st.booleans(),
)
def test_unknown_domains_and_opsets(tmp_path_factory, domain, op, opset, extra_domain) -> None:
    nodes = [helper.make_node(op, ["x"], ["y"], domain=domain)]
    graph = helper.make_graph(
        nodes, "d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    imports = [helper.make_opsetid("", opset)]
    if domain not in ("", "ai.onnx") or extra_domain:
        imports.append(helper.make_opsetid(domain or "x.y", 1))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    result = _load_bytes(tmp_path_factory.mktemp("d"), model.SerializeToString())
    if domain not in ("", "ai.onnx"):
        assert result != "ok"


@settings(settings.get_profile(PROFILE))
@given(
    dims=st.lists(
        st.one_of(st.integers(0, 4), st.sampled_from(["N", "batch", "", "h"])), max_size=4
    ),
    missing=st.booleans(),
)
def test_dynamic_shapes(tmp_path_factory, dims, missing) -> None:
    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, None if missing else dims)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "s", [info],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    result = _load_bytes(tmp_path_factory.mktemp("s"), model.SerializeToString())
    first_ok = not dims or (dims[0] > 0 if isinstance(dims[0], int) else len(dims) > 1)
    rest_ok = all(isinstance(d, int) and d > 0 for d in dims[1:])
    assert (result == "ok") == (not missing and first_ok and rest_ok), result


# ----------------------------------------------------------------------------- regressions


@pytest.mark.parametrize(
    ("nodes", "dims", "match"),
    [
        ([helper.make_node("Relu", ["x"], ["y"])], ["N"], "one symbolic dimension"),
        ([helper.make_node("Relu", ["x"], ["y"])], [1, 0, 3], "sizes must be positive"),
    ],
)
def test_regressions(tmp_path, nodes, dims, match) -> None:
    """Refusals the fuzzers met, with the one line they now give."""
    graph = helper.make_graph(
        nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises((RobustlabError, UnsupportedOperation), match=match):
        path = tmp_path / "r.onnx"
        path.write_bytes(model.SerializeToString())
        load_model(path)


def test_regression_equal_infinities_agree(tmp_path) -> None:
    """Found by the long profile: log(relu(x)) is -inf for x <= 0 on both sides, and the check
    computed inf - inf = nan and refused the model."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Log", ["r"], ["y"])], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    assert _load_bytes(tmp_path, model.SerializeToString()) == "ok"


def test_regression_nan_propagation_is_not_a_disagreement(tmp_path) -> None:
    """Found by the ci profile: max(sqrt(x)) over normal samples is NaN in torch (amax keeps NaN)
    and finite in onnxruntime (its max skips NaN); entries NaN on one side are not compared."""
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["x"], ["r"]),
         helper.make_node("ReduceMax", ["r"], ["y"], axes=[0], keepdims=1)], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    assert _load_bytes(tmp_path, model.SerializeToString()) == "ok"

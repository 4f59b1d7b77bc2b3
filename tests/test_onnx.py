"""Tests for the ONNX <-> torch.fx converter and exporter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from robustlab._onnx import (
    SUPPORTED_OPS,
    check_against_onnxruntime,
    onnx_to_torch,
    torch_to_onnx,
)
from robustlab.errors import RobustlabError, UnsupportedOperation

torch.set_num_threads(1)
BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


def _inputs(shape: tuple[int, ...], n: int = 5, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat(
        [torch.rand(n - 2, *shape, generator=gen), torch.randn(2, *shape, generator=gen)]
    )


def _run_ort(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: x})[0]


# ----------------------------------------------------------------------------- torch models


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.conv2(F.relu(self.conv1(x)))
        return self.head(torch.flatten(torch.relu(y), 1))


class ViewNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.linspace(-1, 1, 12).reshape(3, 2, 2))
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sub(self.offset, x) * 2.0 / 3.0 - 0.5
        y = y.view(y.size(0), -1)
        return self.fc(F.leaky_relu(y, 0.2)) + 1.0


class TensorOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding="same", dilation=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.conv(x), (1, 0, 2, 1), value=0.5).permute(0, 1, 3, 2)
        z = torch.cat([y, torch.sigmoid(y) * 2], dim=1)
        return self.fc(z.view(z.shape[0], -1, 4)) + self.pool(z).view(-1, 1, 4)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _cnn() -> nn.Module:
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
        bn,
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def _activations() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Sigmoid(), nn.Dropout(0.3),
        nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 4), nn.Softmax(dim=1),
    )  # fmt: skip


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (_mlp, (1, 8, 8)),
    "cnn": (_cnn, (1, 16, 16)),
    "residual": (Residual, (2, 6, 6)),
    "activations": (_activations, (6,)),
    "view": (ViewNet, (3, 2, 2)),
    "tensor_ops": (TensorOps, (2, 5, 5)),
}


@pytest.fixture(params=sorted(MODELS))
def roundtrip(
    request: pytest.FixtureRequest,
) -> tuple[nn.Module, onnx.ModelProto, fx.GraphModule, tuple]:
    factory, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = factory().eval()
    proto = torch_to_onnx(model, shape)
    gm, sample_shape = onnx_to_torch(proto)
    assert sample_shape == shape
    return model, proto, gm, shape


def test_supported_ops_sorted() -> None:
    assert list(SUPPORTED_OPS) == sorted(SUPPORTED_OPS)
    assert {"Gemm", "Conv", "Relu", "MatMul", "Reshape"} <= set(SUPPORTED_OPS)


def test_roundtrip_agrees(roundtrip: tuple) -> None:
    model, proto, gm, shape = roundtrip
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert proto.graph.output[0].name == "output"
    assert proto.ir_version <= 8
    x = _inputs(shape)
    with torch.no_grad():
        expected, converted = model(x).numpy(), gm(x).numpy()
    assert np.abs(expected - converted).max() < 1e-5
    assert np.abs(expected - _run_ort(proto, x.numpy())).max() < 1e-5
    assert check_against_onnxruntime(proto, model, shape).max_abs < 1e-5
    assert check_against_onnxruntime(proto, gm, shape, n=4, seed=3).max_abs < 1e-5
    assert not gm.training and all(p.dtype == torch.float32 for p in gm.parameters())


def test_converted_module_is_retraceable(roundtrip: tuple) -> None:
    _, _, gm, shape = roundtrip
    traced = fx.symbolic_trace(gm)
    for batch in (1, 7):
        x = _inputs(shape, n=batch + 2)[:batch]
        with torch.no_grad():
            y = traced(x)
            assert y.shape[0] == batch
            assert torch.allclose(y, gm(x), atol=1e-6)


def test_converted_graph_uses_native_modules() -> None:
    proto = torch_to_onnx(_cnn().eval(), (1, 16, 16))
    gm, _ = onnx_to_torch(proto)
    kinds = [type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module"]
    assert kinds == [
        nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, nn.Flatten,
        nn.Linear,
    ]  # fmt: skip
    assert (
        gm.get_submodule([n for n in gm.graph.nodes if n.op == "call_module"][3].target).groups == 2
    )


# ----------------------------------------------------------------------------- real files

REAL = [
    "acasxu/ACASXU_run2a_1_1_batch_2000.onnx",
    "test/test_nano.onnx",
    "test/test_tiny.onnx",
    "test/test_small.onnx",
    "oval21/nets/cifar_base_kw.onnx",
    "verivital/Convnet_avgpool.onnx",
    "verivital/Convnet_maxpool.onnx",
]


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="shared benchmarks are missing")
@pytest.mark.parametrize("name", REAL)
def test_real_network(name: str) -> None:
    proto = onnx.load(str(BENCHMARKS / name))
    gm, shape = onnx_to_torch(proto)
    expected_shape = {"acasxu": (1, 1, 5), "test": (1,), "oval21": (3, 32, 32)}
    assert shape == expected_shape.get(name.split("/")[0], (1, 28, 28))
    x = torch.rand(4, *shape)
    with torch.no_grad():
        y = gm(x).numpy()
        assert fx.symbolic_trace(gm)(x).shape[0] == 4
        scale = float(gm(_inputs(shape, n=8)).abs().max())
    # absolute agreement on inputs in [0, 1], fed one at a time as the file's batch is 1
    feeds = list(x) if len(shape) == 1 else list(x.split(1))  # rank-1 files: no batch dim
    reference = np.stack([_run_ort(proto, f.numpy()).reshape(-1) for f in feeds])
    assert np.abs(reference - y.reshape(4, -1)).max() < 1e-4
    # with normal inputs mixed in, outputs grow: float32 rounding scales with them
    tolerance = 1e-4 + 1e-6 * scale
    assert check_against_onnxruntime(proto, gm, shape).max_abs < tolerance
    # and back out again with our exporter
    assert check_against_onnxruntime(torch_to_onnx(gm, shape), gm, shape, n=4).max_abs < tolerance


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="shared benchmarks are missing")
def test_acasxu_structure() -> None:
    gm, _ = onnx_to_torch(onnx.load(str(BENCHMARKS / REAL[0])))
    linears = [m for m in gm.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 7 and all(m.bias is not None for m in linears)  # Add fused as bias
    functions = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert functions == [torch.sub]


# ----------------------------------------------------------------------------- hand-built ONNX


def _model(
    nodes: list[onnx.NodeProto],
    input_dims: list,
    output: str,
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 13,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _agree(proto: onnx.ModelProto, tol: float = 1e-5) -> fx.GraphModule:
    gm, shape = onnx_to_torch(proto)
    assert check_against_onnxruntime(proto, gm, shape).max_abs < tol
    with torch.no_grad():
        assert fx.symbolic_trace(gm)(torch.rand(3, *shape)).shape[0] == 3
    return gm


def _f32(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_gemm_transb0_alpha_beta() -> None:
    node = helper.make_node("Gemm", ["x", "B", "C"], ["y"], alpha=0.5, beta=2.0, transB=0)
    gm = _agree(_model([node], ["N", 4], "y", {"B": _f32(4, 3), "C": _f32(1, 3, seed=1)}))
    (linear,) = [m for m in gm.modules() if isinstance(m, nn.Linear)]
    assert linear.weight.shape == (3, 4)


def test_constant_on_the_left_of_sub_and_div() -> None:
    nodes = [
        helper.make_node("Sub", ["c", "x"], ["y"]),
        helper.make_node("Div", ["d", "y"], ["z"]),
    ]
    inits = {"c": np.full(4, 10.0, np.float32), "d": _f32(1, 4)}
    gm = _agree(_model(nodes, [1, 4], "z", inits))
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert [n.target for n in calls] == [torch.sub, torch.div]
    assert all(n.args[0].op == "get_attr" for n in calls)


def test_reshape_constant_node_identity_dropout() -> None:
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1, -1])
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["b"]),
        helper.make_node("Dropout", ["b"], ["c"]),
        helper.make_node("Constant", [], ["k"], value_float=3.0),
        helper.make_node("Mul", ["c", "k"], ["y"]),
    ]
    gm = _agree(_model(nodes, [1, 2, 3, 4], "y"))
    assert gm(torch.rand(5, 2, 3, 4)).shape == (5, 24)


@pytest.mark.parametrize("opset", [11, 13])
def test_shape_gather_concat_reshape_pattern(opset: int) -> None:
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    minus = numpy_helper.from_array(np.array([-1], np.int64), "minus")
    if opset >= 13:
        unsqueeze = helper.make_node("Unsqueeze", ["n", "axes"], ["n1"])
    else:
        unsqueeze = helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=zero),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        unsqueeze,
        helper.make_node("Constant", [], ["minus"], value=minus),
        helper.make_node("Concat", ["n1", "minus"], ["shape"], axis=0),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "b"], ["y"], transB=1),
    ]
    inits = {"W": _f32(5, 18), "b": _f32(5, seed=2), "axes": np.array([0], np.int64)}
    gm = _agree(_model(nodes, ["batch", 2, 3, 3], "y", inits, opset))
    ops = [(n.op, n.target) for n in gm.graph.nodes if n.op.startswith("call")]
    assert ops == [("call_module", "r"), ("call_module", "flat"), ("call_module", "y")]


def test_spatial_graph_with_asymmetric_pads() -> None:
    nodes = [
        helper.make_node("Pad", ["x", "pads", "pv"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "W", "B"], ["c"], pads=[0, 1, 1, 0], strides=[1, 2]),
        helper.make_node(
            "BatchNormalization", ["c", "scale", "B", "mean", "var"], ["bn"], epsilon=1e-3
        ),
        helper.make_node("MaxPool", ["bn"], ["m"], kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
        helper.make_node(
            "AveragePool",
            ["m"],
            ["a"],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        ),  # fmt: skip
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Softmax", ["f"], ["y"], axis=1),
    ]
    inits = {
        "pads": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64),
        "pv": np.array(0.5, np.float32),
        "W": _f32(4, 2, 3, 3),
        "B": _f32(4, seed=1),
        "scale": np.abs(_f32(4, seed=2)) + 0.5,
        "mean": _f32(4, seed=3),
        "var": np.abs(_f32(4, seed=4)) + 0.5,
    }
    gm = _agree(_model(nodes, [1, 2, 7, 6], "y", inits))
    assert sum(n.target is F.pad for n in gm.graph.nodes) == 3  # Pad, Conv and MaxPool pads


def test_tensor_ops_transpose_concat_gather_squeeze() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("LeakyRelu", ["t"], ["l"], alpha=0.3),
        helper.make_node("Tanh", ["t"], ["h"]),
        helper.make_node("Concat", ["l", "h"], ["c"], axis=-1),
        helper.make_node("Gather", ["c", "idx"], ["g"], axis=2),
        helper.make_node("Unsqueeze", ["g", "ax"], ["u"]),
        helper.make_node("Squeeze", ["u", "ax"], ["s"]),
        helper.make_node("Add", ["s", "s"], ["y"]),
    ]
    inits = {"idx": np.array([5, 0, -1], np.int64), "ax": np.array([1], np.int64)}
    gm = _agree(_model(nodes, [1, 3, 4], "y", inits))
    assert gm(torch.rand(2, 3, 4)).shape == (2, 4, 3)


def test_rank1_sample_graph_shifts_axes() -> None:
    nodes = [
        helper.make_node("MatMul", ["W", "x"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["h"]),
        helper.make_node("Sub", ["c", "h"], ["s"]),
        helper.make_node("Softmax", ["s"], ["y"], axis=0),
    ]
    inits = {"W": _f32(4, 3), "b": _f32(4, seed=1), "c": _f32(4, seed=2)}
    gm = _agree(_model(nodes, [3], "y", inits))
    (softmax,) = [n for n in gm.graph.nodes if n.target is torch.softmax]
    assert softmax.args[1] == 1  # ONNX axis 0 of a sample without batch axis: torch dim 1
    assert gm(torch.rand(6, 3)).shape == (6, 4)


def _node(op: str, inputs: list[str], output: str = "y", **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attrs)


MISC_GRAPHS = {
    "conv1d_pools": (
        [
            _node("Conv", ["x", "W"], "c", pads=[1, 1], strides=[2]),
            _node("MaxPool", ["c"], "m", kernel_shape=[3], strides=[2], ceil_mode=1),
            _node("AveragePool", ["m"], kernel_shape=[2], pads=[1, 1]),
        ],
        [1, 2, 11],
        {"W": _f32(3, 2, 3)},
        13,
    ),
    "pad_attributes_opset9": (
        [_node("Pad", ["x"], pads=[0, 0, 1, 2, 0, 0, 3, 0], value=1.5)],
        [1, 2, 3, 3],
        {},
        9,
    ),
    "pad_axes_opset18": (
        [_node("Pad", ["x", "p", "", "ax"])],
        [1, 2, 3, 3],
        {"p": np.array([1, 2, 0, 1], np.int64), "ax": np.array([-1, 2], np.int64)},
        18,
    ),
    "squeeze_axes_opset11": (
        [_node("Unsqueeze", ["x"], "u", axes=[2, 4]), _node("Squeeze", ["u"], axes=[2])],
        [1, 3, 4],
        {},
        11,
    ),
    "gather_scalar_globalmax": (
        [_node("Gather", ["x", "i"], "g", axis=1), _node("GlobalMaxPool", ["g"])],
        [1, 3, 4, 5],
        {"i": np.array(-1, np.int64)},
        13,
    ),
    "sample_reshape_transpose_flatten": (
        [
            _node("Reshape", ["x", "s"], "r"),
            _node("Transpose", ["r"], "t", perm=[1, 0]),
            _node("Flatten", ["t"], "f", axis=1),
            _node("MatMul", ["f", "W"]),
        ],
        [6],
        {"s": np.array([2, 3], np.int64), "W": _f32(2, 4)},
        13,
    ),
    "constant_left_matmul_rank3": ([_node("MatMul", ["W", "x"])], [1, 3, 4], {"W": _f32(5, 3)}, 13),
}


@pytest.mark.parametrize("name", sorted(MISC_GRAPHS))
def test_misc_graphs_agree(name: str) -> None:
    nodes, dims, inits, opset = MISC_GRAPHS[name]
    _agree(_model(nodes, dims, "y", inits, opset))


# ----------------------------------------------------------------------------- errors


def test_unsupported_onnx_op_names_op_and_node() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Erf", ["r"], ["y"], name="my_erf", domain="com.example"),
    ]
    with pytest.raises(
        UnsupportedOperation, match="'Erf' of domain 'com.example' at node 'my_erf'"
    ):
        onnx_to_torch(_model(nodes, [1, 4], "y"))


@pytest.mark.parametrize(
    ("nodes", "inits", "match"),
    [
        ([helper.make_node("Gemm", ["x", "W"], ["y"], transA=1)], {"W": _f32(1, 2)}, "2-D"),
        ([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")],
         {"p": np.zeros(6, np.int64)}, "reflect"),
        ([helper.make_node("ArgMax", ["x"], ["y"], select_last_index=1)], {}, "select_last"),
        ([helper.make_node("Slice", ["x", "s", "e"], ["y"])],
         {"s": np.array([2], np.int64), "e": np.array([2], np.int64)}, "no elements"),
        ([helper.make_node("Cast", ["x"], ["c"], to=TensorProto.INT64),
          helper.make_node("Slice", ["x", "c", "c"], ["y"])], {}, "depends on input values"),
    ],
)  # fmt: skip
def test_unsupported_constructs(nodes: list, inits: dict, match: str) -> None:
    with pytest.raises(RobustlabError, match=match):
        onnx_to_torch(_model(nodes, [1, 2, 3], "y", inits))


def test_two_inputs_become_one_flat_input() -> None:
    model = _model([helper.make_node("Add", ["x", "z"], ["y"])], [1, 2], "y")
    model.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2]))
    gm, shape = onnx_to_torch(model)
    assert shape == (4,)
    assert torch.equal(gm(torch.tensor([[1.0, 2.0, 10.0, 20.0]])), torch.tensor([[11.0, 22.0]]))


class SortNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=1).values


@pytest.mark.parametrize(
    ("module", "match"),
    [(SortNet(), "sort"), (nn.Sequential(nn.Linear(3, 3), nn.GELU()), "GELU")],
)
def test_exporter_rejects_unsupported(module: nn.Module, match: str) -> None:
    with pytest.raises(UnsupportedOperation, match=match):
        torch_to_onnx(module, (3,))


def test_exporter_rejects_training_batchnorm() -> None:
    with pytest.raises(UnsupportedOperation, match="eval mode"):
        torch_to_onnx(nn.Sequential(nn.BatchNorm1d(3)).train(), (3,))

"""Each operation of today's networks on a small hand-built graph: the converted module agrees
with onnxruntime, retraces with torch.fx at another batch size, and uses the torch form of the
contract with the bound rules."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from robustlab._onnx import check_against_onnxruntime, onnx_to_torch, run_onnxruntime
from robustlab.errors import RobustlabError


def model(nodes, dims, inits=None, opset=13, inputs=None, outputs=("y",), dtype=TensorProto.FLOAT):
    inputs = inputs or [("x", dims)]
    graph = helper.make_graph(
        nodes,
        "ops",
        [helper.make_tensor_value_info(n, dtype, d) for n, d in inputs],
        [helper.make_tensor_value_info(o, dtype, None) for o in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def f32(*shape, seed=0, low=None):
    a = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return np.abs(a) + low if low is not None else a


def node(op, inputs, output="y", **attrs):
    return helper.make_node(op, inputs, [output], **attrs)


def i64(*values):
    return np.array(values, np.int64)


def agree(proto, tol=1e-5) -> fx.GraphModule:
    gm, shape = onnx_to_torch(proto)
    check = check_against_onnxruntime(proto, gm, shape)
    assert check.relative() < tol, check
    traced = fx.symbolic_trace(gm)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        assert torch.allclose(traced(x), gm(x), rtol=1e-6, atol=1e-6)
        assert traced(x[:1]).shape[0] == 1
    return gm


def targets(gm: fx.GraphModule) -> set:
    out = set()
    for n in gm.graph.nodes:
        if n.op == "call_module":
            out.add(type(gm.get_submodule(n.target)))
        elif n.op in ("call_function", "call_method"):
            out.add(n.target)
    return out


CASES = {
    "conv_transpose_2d": (
        [node("ConvTranspose", ["x", "W", "b"], strides=[2, 2], pads=[1, 0, 0, 1],
              output_padding=[1, 0])],
        [1, 3, 4, 5], {"W": f32(3, 2, 3, 3), "b": f32(2, seed=1)}, 13,
        {nn.ConvTranspose2d, operator.getitem},
    ),
    "conv_transpose_1d_group_dilation": (
        [node("ConvTranspose", ["x", "W"], group=2, dilations=[2], pads=[1, 1])],
        [1, 4, 6], {"W": f32(4, 3, 3)}, 13, {nn.ConvTranspose1d},
    ),
    "conv_transpose_same_upper": (
        [node("ConvTranspose", ["x", "W"], strides=[2, 2], auto_pad="SAME_UPPER")],
        [1, 2, 3, 3], {"W": f32(2, 2, 3, 3)}, 13, {nn.ConvTranspose2d},
    ),
    "conv_transpose_output_shape": (
        [node("ConvTranspose", ["x", "W"], strides=[2, 2], output_shape=[7, 8])],
        [1, 2, 3, 4], {"W": f32(2, 1, 3, 3)}, 13, {nn.ConvTranspose2d},
    ),
    "slice_negative_and_steps": (
        [node("Slice", ["x", "s", "e", "a", "st"])],
        [1, 3, 8, 6], {"s": i64(-1, 1), "e": i64(-9, 6), "a": i64(2, 3), "st": i64(-2, 2)}, 13,
        {torch.flip, operator.getitem},
    ),
    "slice_opset9_attributes": (
        [node("Slice", ["x"], starts=[1], ends=[100], axes=[1])], [1, 5], {}, 9,
        {operator.getitem},
    ),
    "split_and_concat": (
        [helper.make_node("Split", ["x", "sp"], ["a", "b", "c"], axis=1),
         node("Concat", ["c", "a", "b"], axis=1)],
        [1, 7, 2], {"sp": i64(2, 4, 1)}, 13, {operator.getitem, torch.cat},
    ),
    "upsample_nearest_opset9": (
        [node("Upsample", ["x", "s"], mode="nearest")], [1, 2, 3, 4],
        {"s": np.array([1, 1, 2, 3], np.float32)}, 9, {nn.Upsample},
    ),
    "resize_bilinear_half_pixel": (
        [node("Resize", ["x", "", "s"], mode="linear")], [1, 2, 3, 4],
        {"s": np.array([1, 1, 2, 2], np.float32)}, 13, {nn.Upsample},
    ),
    "resize_sizes_align_corners": (
        [node("Resize", ["x", "", "", "z"], mode="linear",
              coordinate_transformation_mode="align_corners")],
        [1, 2, 3, 4], {"z": i64(1, 2, 5, 7)}, 13, {nn.Upsample},
    ),
    "resize_nearest_asymmetric_floor": (
        [node("Resize", ["x", "", "s"], mode="nearest", coordinate_transformation_mode="asymmetric",
              nearest_mode="floor")],
        [1, 1, 3, 3], {"s": np.array([1, 1, 2, 2], np.float32)}, 13, {nn.Upsample},
    ),
    "softmax_logsoftmax": (
        [node("Softmax", ["x"], "s", axis=1), node("LogSoftmax", ["s"], axis=-1)],
        [1, 4, 5], {}, 13, {torch.softmax, torch.log_softmax},
    ),
    "matmul_of_two_tensors_attention": (
        [node("MatMul", ["x", "W"], "q"), node("Transpose", ["q"], "k", perm=[0, 2, 1]),
         node("MatMul", ["q", "k"], "s"), node("Softmax", ["s"], "p", axis=-1),
         node("MatMul", ["p", "x"])],
        [1, 5, 3], {"W": f32(3, 4)}, 13, {torch.matmul, nn.Linear, torch.softmax},
    ),
    "mul_div_of_two_tensors": (
        [node("Sigmoid", ["x"], "s"), node("Mul", ["x", "s"], "m"), node("Add", ["s", "one"], "d"),
         node("Div", ["m", "d"])],
        [1, 6], {"one": np.ones(1, np.float32)}, 13, {operator.mul, operator.truediv},
    ),
    "reductions": (
        [node("ReduceMean", ["x"], "a", axes=[2], keepdims=1), node("ReduceMax", ["x"], "b", axes=[1]),
         node("ReduceMin", ["b"], "c", axes=[-1], keepdims=0),
         node("ReduceSum", ["a", "ax"], "d", keepdims=0), node("Mul", ["d", "c"])],
        [1, 3, 4], {"ax": i64(1)}, 13, {torch.mean, torch.amax, torch.amin, torch.sum},
    ),
    "pow_sqrt_reciprocal": (
        [node("Pow", ["x", "p"], "a"), node("Sqrt", ["a"], "b"), node("Add", ["b", "c"], "e"),
         node("Reciprocal", ["e"])],
        [1, 5], {"p": np.array(2.0, np.float32), "c": np.array(1.0, np.float32)}, 13,
        {torch.pow, torch.sqrt, torch.reciprocal},
    ),
    "elementwise_functions": (
        [node("Sin", ["x"], "a"), node("Cos", ["a"], "b"), node("Exp", ["b"], "c"),
         node("Log", ["c"], "d"), node("Abs", ["x"], "e"), node("Neg", ["e"], "f"),
         node("Erf", ["f"], "g"), node("Add", ["d", "g"], "h"), node("Sign", ["h"], "i"),
         node("Add", ["i", "h"])],
        [1, 6], {}, 13,
        {torch.sin, torch.cos, torch.exp, torch.log, torch.abs, operator.neg, torch.erf, torch.sign},
    ),
    "clip_min_max": (
        [node("Clip", ["x", "lo", "hi"], "c"), node("Min", ["c", "k"], "m"),
         node("Max", ["m", "x"])],
        [1, 4], {"lo": np.array(0.2, np.float32), "hi": np.array(0.7, np.float32),
                 "k": f32(4)}, 13,
        {torch.clamp, torch.minimum, torch.maximum},
    ),
    "gelu_opset20": ([node("Gelu", ["x"])], [1, 6], {}, 20, {F.gelu}),
    "layer_normalization": (
        [node("LayerNormalization", ["x", "g", "b"], axis=-1, epsilon=1e-3)], [1, 3, 4],
        {"g": f32(4, low=0.5), "b": f32(4, seed=2)}, 17, {F.layer_norm},
    ),
    "where_constant_condition": (
        [node("Where", ["c", "x", "k"])], [1, 2, 3],
        {"c": np.array([[True, False, True], [False, False, True]]), "k": f32(3)}, 13, {torch.where},
    ),
    "gather_constant_indices": (
        [node("Gather", ["x", "i"], "a", axis=2), node("Gather", ["a", "j"], axis=1)],
        [1, 3, 5], {"i": i64(4, 0, -1, 0), "j": np.array(2, np.int64)}, 13,
        {torch.index_select, operator.getitem},
    ),
    "scatternd_constant_indices": (
        [node("Relu", ["x"], "r"), node("ScatterND", ["r", "i", "u"]),],
        [1, 4, 3], {"i": np.array([[[0, 2]], [[0, 0]]], np.int64), "u": f32(2, 1, 3)}, 13,
        {torch.mul, torch.add},
    ),
    "scatternd_dynamic_updates": (
        [node("Slice", ["x", "s", "e", "a"], "v"), node("Squeeze", ["v", "z"], "u"),
         node("ScatterND", ["x", "i", "u"])],
        [1, 4], {"s": i64(0), "e": i64(2), "a": i64(1), "z": i64(0),
                 "i": np.array([[0, 3], [0, 1]], np.int64)},
        13, {torch.matmul, torch.mul},
    ),
    "constants_folded_class_token": (  # ViT: Shape -> ConstantOfShape -> Add -> Concat
        [node("Shape", ["x"], "sh"), node("Gather", ["sh", "zero"], "n"),
         node("Unsqueeze", ["n", "ax"], "n1"), node("Concat", ["n1", "one", "d"], "full", axis=0),
         node("ConstantOfShape", ["full"], "zeros", value=helper.make_tensor("v", 1, [1], [0.0])),
         node("Add", ["zeros", "cls"], "tok"), node("Concat", ["tok", "x"], "cat", axis=1),
         node("Range", ["r0", "r1", "r2"], "rng"), node("Cast", ["rng"], "rf", to=1),
         node("Expand", ["rf", "sh2"], "ex"), node("Add", ["cat", "ex"])],
        ["batch", 3, 4],
        {"zero": np.array(0, np.int64), "ax": i64(0), "one": i64(1), "d": i64(4),
         "cls": f32(4), "r0": np.array(0, np.int64), "r1": np.array(4, np.int64),
         "r2": np.array(1, np.int64), "sh2": i64(1, 4, 4)},
        13, {F.pad, torch.add},
    ),
    "transpose_moving_the_batch_axis": (  # ml4acopf: Transpose, constant @ x, Transpose back
        [node("Transpose", ["x"], "t", perm=[1, 0]), node("MatMul", ["W", "t"], "m"),
         node("Transpose", ["m"], perm=[1, 0])],
        [1, 4], {"W": f32(3, 4)}, 13, set(),
    ),
    "flatten_and_softmax_along_axis_0": (
        [node("Flatten", ["x"], "f", axis=2), node("Softmax", ["f"], axis=0)],
        [1, 2, 3], {}, 13, {torch.softmax},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_operation_agrees_with_onnxruntime(name: str) -> None:
    nodes, dims, inits, opset, expected = CASES[name]
    gm = agree(model(nodes, dims, inits, opset))
    assert expected <= targets(gm), targets(gm)


def test_several_inputs_and_outputs_in_vnnlib_order() -> None:
    nodes = [node("MatMul", ["a", "W"], "p"), node("Mul", ["p", "b"], "y"), node("Neg", ["a"], "z")]
    proto = model(
        nodes, None, {"W": f32(3, 2)}, inputs=[("a", [1, 3]), ("b", [2])], outputs=("y", "z")
    )
    gm, shape = onnx_to_torch(proto)
    assert shape == (5,)
    x = torch.rand(4, 5)
    with torch.no_grad():
        y = gm(x)
    assert y.shape == (4, 5)
    assert np.allclose(y.numpy(), run_onnxruntime(proto, x.numpy()), atol=1e-6)
    assert torch.equal(y[:, 2:], -x[:, :3])  # the second output follows the first


@pytest.mark.parametrize(
    ("dims", "shape"),
    [(["N", 3, 2], (3, 2)), ([1, 6], (6,)), ([6], (6,)), ([2, 3], (2, 3)), ([], ())],
)
def test_batch_dims_symbolic_fixed_or_missing(dims: list, shape: tuple) -> None:
    proto = model([node("Relu", ["x"])], dims)
    gm, found = onnx_to_torch(proto)
    assert found == shape
    if dims:
        agree(proto)


def test_float64_network_keeps_float64_weights() -> None:
    w = np.random.default_rng(0).normal(size=(3, 2))
    proto = model(
        [node("MatMul", ["x", "W"], "m"), node("Relu", ["m"])],
        [1, 3], {"W": w}, dtype=TensorProto.DOUBLE,
    )  # fmt: skip
    gm, _ = onnx_to_torch(proto)
    (linear,) = [m for m in gm.modules() if isinstance(m, nn.Linear)]
    assert linear.weight.dtype == torch.float64 and torch.equal(
        linear.weight.T, torch.from_numpy(w)
    )
    assert check_against_onnxruntime(proto, gm, (3,)).max_abs < 1e-12
    assert gm(torch.rand(2, 3, dtype=torch.float32)).dtype == torch.float64


def test_discrete_outputs_compare_by_samples() -> None:
    proto = model([node("ArgMax", ["x"], "a", axis=1, keepdims=0),
                   node("Cast", ["a"], "y", to=TensorProto.FLOAT)], [1, 5])  # fmt: skip
    gm, shape = onnx_to_torch(proto)
    check = check_against_onnxruntime(proto, gm, shape)
    assert check.discrete and check.max_abs == 0.0 and check.agrees(1e-4)


@pytest.mark.parametrize(
    ("nodes", "inits", "opset", "match"),
    [
        ([node("Resize", ["x", "", "s"], mode="cubic")], {"s": np.ones(3, np.float32)}, 13, "cubic"),
        ([node("Resize", ["x", "", "s"], mode="linear", coordinate_transformation_mode="asymmetric")],
         {"s": np.array([1, 1, 2], np.float32)}, 13, "coordinate_transformation_mode='asymmetric'"),
        ([node("Upsample", ["x", "s"], mode="linear")], {"s": np.array([1, 1, 2], np.float32)},
         9, "asymmetric"),
        ([node("ConvTranspose", ["x", "W"], output_padding=[2])], {"W": f32(2, 1, 3)}, 13,
         "output_padding"),
        ([node("ScatterND", ["x", "i", "x"], reduction="add")], {"i": np.zeros((1, 1), np.int64)},
         16, "reduction"),
        ([node("Softmax", ["x"], axis=1)], {}, 11, "before opset 13"),
        ([node("ConstantOfShape", ["big"], "c"), node("Add", ["x", "c"])],
         {"big": i64(100000, 100000)}, 13, "too large"),
    ],
)  # fmt: skip
def test_refused_with_the_reason(nodes, inits, opset, match) -> None:
    with pytest.raises(RobustlabError, match=match):
        onnx_to_torch(model(nodes, [1, 2, 4], inits, opset))


@pytest.mark.parametrize("half_first", [False, True])
def test_erf_gelu_pattern_becomes_one_gelu(half_first: bool) -> None:
    """PyTorch's export of GELU before opset 20."""
    tail = (
        [node("Mul", ["x", "h"], "xh"), node("Mul", ["xh", "p"])]
        if half_first
        else [node("Mul", ["x", "p"], "xp"), node("Mul", ["xp", "h"])]
    )
    nodes = [node("Div", ["x", "r2"], "d"), node("Erf", ["d"], "e"), node("Add", ["e", "one"], "p"),
             *tail]  # fmt: skip
    inits = {"r2": np.array(np.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
             "h": np.array(0.5, np.float32)}  # fmt: skip
    gm = agree(model(nodes, [1, 6], inits))
    assert targets(gm) == {F.gelu}

"""VNN-LIB 2.0 networks meeting their ONNX models: inputs and outputs matched by declared ONNX
name (by position when none is declared), hidden nodes exposed as extra outputs, and
contradictions found across conjunctions."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustlab.verify import verify
from robustlab.verify.product import to_product
from robustlab.verify.relational import holds
from robustlab.verify.vnnlib2 import parse


def _two_ports(path):
    """Inputs u, v (1 number each); outputs p = u - 2 v, then q = u + v."""
    two = numpy_helper.from_array(np.array([[2.0]], dtype=np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["v", "two"], ["v2"]),
        helper.make_node("Sub", ["u", "v2"], ["p"]),
        helper.make_node("Add", ["u", "v"], ["q"]),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1]) for n in "uvpq"]
    graph = helper.make_graph(nodes, "two_ports", io[:2], io[2:], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _query(inputs: str, outputs: str, asserts: str) -> str:
    return f"(vnnlib-version <2.0>)\n(declare-network f\n{inputs}\n{outputs}\n)\n{asserts}\n"


# V in [0, 0.1], U in [0.9, 1]: p = u - 2v in [0.7, 1], q = u + v in [0.9, 1.1]
_BOX = (
    "(assert (>= V[0] 0.0))\n(assert (<= V[0] 0.1))\n(assert (>= U[0] 0.9))\n(assert (<= U[0] 1.0))"
)
_NAMED_IN = '(declare-input V Real [1] "v")\n(declare-input U Real [1] "u")'
_NAMED_OUT = '(declare-output Q Real [1] "q")\n(declare-output P Real [1] "p")'


@pytest.mark.parametrize(
    "inputs,outputs,expected",
    [
        (_NAMED_IN, _NAMED_OUT, "holds"),  # P = p >= 0.7 everywhere
        # by position V is u and U is v: p in [-2, -1.7], which P <= 0.5 reaches
        ("(declare-input V Real [1])\n(declare-input U Real [1])", _NAMED_OUT, "violated"),
        # by position P is q in [0.9, 1.1] (with the named inputs): holds again
        (_NAMED_IN, "(declare-output Q Real [1])\n(declare-output P Real [1])", "holds"),
    ],
)
def test_inputs_and_outputs_are_matched_by_onnx_name(tmp_path, inputs, outputs, expected):
    m = _two_ports(tmp_path / "m.onnx")
    q = tmp_path / "q.vnnlib"
    q.write_text(_query(inputs, outputs, _BOX + "\n(assert (<= P[0] 0.5))"))
    r = verify(m, q, timeout=20)
    assert r.verdict == expected, r
    if expected == "violated":  # replayed: by position V feeds "u", U feeds "v"
        v = r.counterexample["variables"]
        sess = ort.InferenceSession(str(m))
        feeds = {
            "u": np.float32(v["V"]).reshape(1, 1),
            "v": np.float32(v["U"]).reshape(1, 1),
        }
        p, qq = sess.run(["p", "q"], feeds)
        assert np.allclose(v["P"], p.reshape(-1)) and np.allclose(v["Q"], qq.reshape(-1))
        assert float(v["P"][0]) <= 0.5


def test_an_unknown_onnx_name_is_one_line(tmp_path):
    m = _two_ports(tmp_path / "m.onnx")
    q = tmp_path / "q.vnnlib"
    bad_in = '(declare-input V Real [1] "w")\n(declare-input U Real [1] "u")'
    for inputs, outputs, word in [
        (bad_in, _NAMED_OUT, "'w'"),
        (_NAMED_IN, '(declare-output Q Real [1] "r")\n(declare-output P Real [1] "p")', "'r'"),
    ]:
        q.write_text(_query(inputs, outputs, _BOX + "\n(assert (<= P[0] 0.5))"))
        r = verify(m, q, timeout=20)
        assert r.verdict == "error" and word in r.message and "\n" not in r.message, r


def _hidden_net(path, seed: int = 0):
    """x (2) -> Gemm -> 'hid' (3) -> Relu -> Gemm -> y (1); returns the weights."""
    gen = np.random.default_rng(seed)
    w1, b1 = gen.normal(size=(3, 2)).astype(np.float32), gen.normal(size=3).astype(np.float32)
    w2, b2 = gen.normal(size=(1, 3)).astype(np.float32), gen.normal(size=1).astype(np.float32)
    inits = [
        numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["hid"], transB=1),
        helper.make_node("Relu", ["hid"], ["act"]),
        helper.make_node("Gemm", ["act", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hidden",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return w1, b1


_HIDDEN_HEAD = """(vnnlib-version <2.0>)
(declare-network f
  (declare-input X Real [2])
  (declare-hidden H Real [1,3] "hid")
  (declare-output Y Real [1])
)
(assert (>= X[0] -1.0))
(assert (<= X[0] 1.0))
(assert (>= X[1] -1.0))
(assert (<= X[1] 1.0))
"""


@pytest.mark.parametrize("margin,expected", [(0.3, "holds"), (-0.05, "violated")])
def test_hidden_nodes_are_bounded_like_outputs(tmp_path, margin, expected):
    """An assertion over an intermediate tensor (the pre-activation 'hid'): proved above the
    sampled maximum, falsified below it with a counterexample whose hidden values replay."""
    m = tmp_path / "m.onnx"
    w1, b1 = _hidden_net(m)
    xs = np.random.default_rng(1).uniform(-1, 1, size=(20000, 2)).astype(np.float32)
    top = float((xs @ w1.T + b1)[:, 1].max())
    q = tmp_path / "q.vnnlib"
    q.write_text(_HIDDEN_HEAD + f"(assert (>= H[0,1] {top + margin:.6f}))\n")
    r = verify(m, q, timeout=30)
    assert r.verdict == expected, r
    if expected == "violated":
        v = {k: np.asarray(a) for k, a in r.counterexample["variables"].items()}
        x = v["X"].astype(np.float32)
        assert np.allclose(v["H"], x @ w1.T + b1, atol=1e-5)
        query = parse(q.read_text(), "q")
        values = {"X": x, "H": v["H"].reshape(1, 3), "Y": v["Y"]}
        assert holds(query, values)
        assert set(r.counterexample["variables"]) == {"X", "H", "Y"}
        assert len(r.counterexample["y"]) == 1  # the declared outputs only


def test_a_hidden_node_naming_no_tensor_is_one_line(tmp_path):
    m = tmp_path / "m.onnx"
    _hidden_net(m)
    q = tmp_path / "q.vnnlib"
    q.write_text(_HIDDEN_HEAD.replace('"hid"', '"nothere"') + "(assert (>= H[0,1] 9.0))\n")
    r = verify(m, q, timeout=20)
    assert r.verdict == "error" and "'nothere'" in r.message and "\n" not in r.message, r
    q.write_text(_HIDDEN_HEAD.replace("[1,3]", "[1,4]") + "(assert (>= H[0,1] 9.0))\n")
    r = verify(m, q, timeout=20)
    assert r.verdict == "error" and "holds 3" in r.message, r


_HEAD = "(vnnlib-version <2.0>)\n(declare-network f (declare-input X Real [2]) (declare-output Y Real [2]))\n"
_BOX2 = "(assert (>= X[0] 0.0))\n(assert (<= X[0] 1.0))\n(assert (>= X[1] 0.0))\n(assert (<= X[1] 1.0))\n"


def test_contradictions_across_conjunctions():
    """An alternative that contradicts a row holding everywhere, or an alternative of another
    disjunction, is dropped (its conjunction is empty); a row holding everywhere against another
    one empties the whole unsafe region."""
    one = to_product(
        parse(
            _HEAD + _BOX2 + "(assert (>= Y[0] 1.0))\n(assert (or (<= Y[0] 0.5) (<= Y[1] 0.0)))", "q"
        )
    ).spec
    assert len(one.disjunct_region) == 1 and one.C[:, 1].abs().sum() > 0
    crossed = to_product(
        parse(
            _HEAD
            + _BOX2
            + "(assert (or (>= Y[0] 1.0) (>= Y[1] 2.0)))\n(assert (or (<= Y[0] 0.5) (<= Y[1] 3.0)))",
            "q",
        )
    ).spec
    assert len(crossed.disjunct_region) == 3  # of 4: Y[0] >= 1 and Y[0] <= 0.5 is empty
    boxes = to_product(
        parse(_HEAD + _BOX2 + "(assert (or (<= X[0] -1.0) (>= Y[1] 2.0)))", "q")
    ).spec
    assert len(boxes.disjunct_region) == 1  # X[0] <= -1 is outside X[0] >= 0
    empty = to_product(parse(_HEAD + _BOX2 + "(assert (>= Y[0] 1.0))\n(assert (<= Y[0] 0.5))", "q"))
    assert len(empty.spec.disjunct_region) == 0


def test_empty_unsafe_region_holds(tmp_path):
    from robustlab._onnx import torch_to_onnx

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    onnx.save(torch_to_onnx(net, (2,)), tmp_path / "m.onnx")
    (tmp_path / "q.vnnlib").write_text(
        _HEAD + _BOX2 + "(assert (>= Y[0] 1.0))\n(assert (<= Y[0] 0.5))"
    )
    assert verify(tmp_path / "m.onnx", tmp_path / "q.vnnlib", timeout=20).verdict == "holds"

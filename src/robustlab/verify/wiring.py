"""How a VNN-LIB 2.0 network declaration meets its ONNX model: inputs and outputs matched by
their declared ONNX names (by position when the query declares none), and hidden nodes (an
intermediate ONNX tensor named by ``declare-hidden``) exposed as extra graph outputs of a copy of
the model, so that bounds and counterexamples cover them like outputs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from robustlab.errors import RobustlabError
from robustlab.model import load_model
from robustlab.verify.oracle import onnx_inputs
from robustlab.verify.vnnlib2 import Network, Variable


@dataclass(frozen=True)
class Wiring:
    """One network's wiring: the ONNX model's flat input position j takes the declared flat input
    ``feed[j]`` (declared inputs flattened in declared order); the declared results (outputs then
    hidden nodes, flat) are the ONNX model's flat outputs ``pick`` (all its outputs flattened and
    joined, ``n_out`` numbers, the exposed hidden tensors last)."""

    feed: np.ndarray
    pick: np.ndarray
    n_out: int

    @property
    def identity(self) -> bool:
        return (
            len(self.pick) == self.n_out
            and np.array_equal(self.feed, np.arange(len(self.feed)))
            and np.array_equal(self.pick, np.arange(self.n_out))
        )

    def pick_matrix(self) -> np.ndarray:
        """``pick`` as a 0/1 matrix (declared results x ONNX outputs): exact in any precision."""
        out = np.zeros((len(self.pick), self.n_out))
        out[np.arange(len(self.pick)), self.pick] = 1.0
        return out


def expose(onnx_bytes: bytes, names: list[str], where: str) -> bytes:
    """A copy of the model with the tensors ``names`` added as graph outputs (after the existing
    ones; a name that is an output already is not added again)."""
    proto = onnx.load_model_from_string(onnx_bytes)
    g = proto.graph
    known = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    outputs = {o.name for o in g.output}
    missing = [n for n in names if n not in known]
    if missing:
        raise RobustlabError(
            f"{where}: names ONNX tensor '{missing[0]}', which the model does not have"
        )
    todo = [n for n in dict.fromkeys(names) if n not in outputs]
    if not todo:
        return onnx_bytes
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        info = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.input]}
    except Exception:  # shape inference fails on some models: outputs without a shape
        info = {}
    for n in todo:
        v = info.get(n)
        if v is None or not v.type.tensor_type.elem_type:
            v = onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
        g.output.append(v)
    return proto.SerializeToString()


def output_sizes(onnx_bytes: bytes) -> list[tuple[str, int]]:
    """Every graph output's name and number of elements, from one onnxruntime run at zero
    inputs (sizes that the declared shapes may leave symbolic)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    feeds = {p.name: np.zeros(p.shape, dtype=p.dtype) for p in onnx_inputs(onnx_bytes)}
    outs = sess.run(None, feeds)
    return [
        (o.name, int(np.asarray(a).size)) for o, a in zip(sess.get_outputs(), outs, strict=True)
    ]


def _offsets(variables) -> list[np.ndarray]:
    out, k = [], 0
    for v in variables:
        out.append(np.arange(k, k + v.numel))
        k += v.numel
    return out


def _match(
    variables: tuple[Variable, ...], ports: list[tuple[str, int]], kind: str, where: str
) -> list[int]:
    """The port of each declared variable: by its ONNX name where declared, else the next port
    (in declared order) that no name claims."""
    names = [p for p, _ in ports]
    claimed = set()
    for v in variables:
        if v.onnx_name:
            if v.onnx_name not in names:
                raise RobustlabError(
                    f"{where}: {kind} {v.name} names ONNX {kind} '{v.onnx_name}'; the model's "
                    f"{kind}s are {', '.join(repr(n) for n in names)}"
                )
            claimed.add(names.index(v.onnx_name))
    free = iter(i for i in range(len(names)) if i not in claimed)
    out = [names.index(v.onnx_name) if v.onnx_name else next(free, -1) for v in variables]
    for v, i in zip(variables, out, strict=True):
        if i < 0:
            raise RobustlabError(f"{where}: {kind} {v.name} matches no ONNX {kind}")
        if ports[i][1] != v.numel:
            raise RobustlabError(
                f"{where}: {kind} {v.name} declares {v.numel} numbers; ONNX {kind} "
                f"'{ports[i][0]}' holds {ports[i][1]}"
            )
    return out


def wire(query_name: str, net: Network, onnx_bytes: bytes) -> tuple[Wiring, bytes]:
    """The wiring of ``net`` to its model, and the bytes to run (a copy with the hidden tensors
    as extra outputs when ``net`` declares hidden nodes). Declared ONNX names that the model
    does not have, or whose size differs from the declaration, raise a one-line error."""
    where = f"{query_name}: network {net.name}"
    original = [o.name for o in onnx.load_model_from_string(onnx_bytes).graph.output]
    if net.hidden:
        onnx_bytes = expose(onnx_bytes, [v.onnx_name for v in net.hidden], where + " hidden node")
    n_in = sum(v.numel for v in net.inputs)
    feed = np.arange(n_in)
    if any(v.onnx_name for v in net.inputs):
        ports = [(p.name, p.numel) for p in onnx_inputs(onnx_bytes)]
        if len(ports) == 1 and len(net.inputs) == 1:  # a batch dimension may be left out
            ports = [(ports[0][0], n_in)]
        order = _match(net.inputs, ports, "input", where)
        starts = _offsets(net.inputs)
        feed = np.concatenate(
            [starts[order.index(j)] for j in range(len(ports)) if j in order] or [feed[:0]]
        )
        if len(feed) != n_in:
            raise RobustlabError(f"{where}: the model has ONNX inputs the query does not declare")
    named = any(v.onnx_name for v in net.outputs)
    if not named and not net.hidden:
        n_out = sum(v.numel for v in net.outputs)
        return Wiring(feed, np.arange(n_out), n_out), onnx_bytes
    sizes = output_sizes(onnx_bytes)
    starts, k = [], 0
    for _, n in sizes:
        starts.append(np.arange(k, k + n))
        k += n
    plain = [(n, s) for n, s in sizes if n in original]
    out_ports = _match(net.outputs, plain, "output", where)
    names = [n for n, _ in sizes]
    pick = [starts[names.index(plain[i][0])] for i in out_ports]
    for v in net.hidden:
        i = names.index(v.onnx_name)
        if sizes[i][1] != v.numel:
            raise RobustlabError(
                f"{where}: hidden node {v.name} declares {v.numel} numbers; ONNX tensor "
                f"'{v.onnx_name}' holds {sizes[i][1]}"
            )
        pick.append(starts[i])
    return Wiring(feed, np.concatenate(pick), k), onnx_bytes


def load_bytes(onnx_bytes: bytes):
    """A LoadedModel of an ONNX model given as bytes (through a temporary file)."""
    with tempfile.TemporaryDirectory(prefix="robustlab-") as tmp:
        path = Path(tmp) / "exposed.onnx"
        path.write_bytes(onnx_bytes)
        return load_model(path)

"""Data-dependent indexing by case variables: integers cast from the input (a patch position, a
crop offset) that select *which* constant a network uses, not how the data is computed.

A Cast of an input-dependent float to an integer type starts a *case variable*. Every ONNX node
computed from case variables and constants only (Slice / Range / ScatterND / Expand / Shape on
them: shapes that depend on input values) forms the *case program*, a small ONNX graph run by
onnxruntime for each distinct value of the case variables (results cached). Where a case value
meets the input-dependent data (e.g. a mask multiplied with the image), the fx graph gets one
``CaseValue`` node: a function of the case variables' float sources, piecewise constant. The
forward pass is exact; the bound engine sees a ``CaseValue`` as an unsupported operation, and the
verifier splits the input region into the cells where the case variables are constant
(:mod:`robustlab.verify.cases`), where each case value is a constant."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

MAX_CACHED = 1 << 16  # case-program results kept per program


@dataclass
class Case:
    """An ONNX value computed from case variables and constants only; ``value`` is its value
    for the representative case (the one conversion's examples fall in), for shapes."""

    name: str
    value: np.ndarray


@dataclass(eq=False)
class CaseProgram:
    """The ONNX nodes computed from case variables, run by onnxruntime per case."""

    opset: int
    # (ONNX name, integer type, ONNX shape) per case variable
    variables: list[tuple[str, np.dtype, tuple[int, ...]]] = field(default_factory=list)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    dtypes: dict[str, np.dtype] = field(default_factory=dict)  # each output's element type

    def __post_init__(self) -> None:
        self._session = None
        self._built = -1
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> CaseProgram:
        return self  # immutable once converted; the session is not copyable

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k in ("_session", "_lock", "_cache"):
            state.pop(k, None)
        state["nodes"] = [n.SerializeToString() for n in self.nodes]
        return state

    def __setstate__(self, state: dict) -> None:
        state["nodes"] = [_node(b) for b in state["nodes"]]
        self.__dict__.update(state)
        self.__post_init__()

    def model(self) -> onnx.ModelProto:
        """The case program as an ONNX model: case variables in, the case values out."""
        produced = {o for n in self.nodes for o in n.output}
        used = {i for n in self.nodes for i in n.input if i and i not in produced}
        names = {v for v, _, _ in self.variables}
        inits = [
            numpy_helper.from_array(np.asarray(self.constants[i]), i)
            for i in sorted(used - names)
            if i in self.constants
        ]
        inputs = [
            helper.make_tensor_value_info(v, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
            for v, t, _ in self.variables
        ]
        outputs = [
            helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(self.dtypes[o]), None)
            for o in self.outputs
        ]
        graph = helper.make_graph(list(self.nodes), "cases", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = min(model.ir_version, 8)
        return model

    def _sess(self):
        version = len(self.nodes) * 1000 + len(self.outputs)
        if self._session is None or self._built != version:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = 1
            model = self.model().SerializeToString()
            self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            self._built = version
            self._cache.clear()
        return self._session

    def run(self, key: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """Every case value for one case (``key``: each variable's integer array)."""
        with self._lock:
            sess = self._sess()
            k = tuple((a.shape, a.tobytes()) for a in key)
            if k not in self._cache:
                feeds = {v: a for (v, _, _), a in zip(self.variables, key, strict=True)}
                outs = sess.run(self.outputs, feeds)
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
                self._cache[k] = dict(zip(self.outputs, outs, strict=True))
            return self._cache[k]

    def key(self, sources: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """The case variables' values from their float sources (ONNX Cast truncates)."""
        return tuple(
            np.asarray(np.trunc(np.asarray(s, dtype=np.float64))).astype(t).reshape(shape)
            for s, (_, t, shape) in zip(sources, self.variables, strict=True)
        )


def _node(data: bytes) -> onnx.NodeProto:
    node = onnx.NodeProto()
    node.ParseFromString(data)
    return node


@dataclass(frozen=True, eq=False)
class CaseValue:
    """``f(sources)``: the case value ``name`` for the case variables cast from ``sources``
    (one tensor per variable, batched (B, ...)), as a (B, *shape) tensor of ``dtype``; a sample
    whose value has another shape than ``shape`` is refused."""

    program: CaseProgram
    name: str
    shape: tuple[int, ...]  # per sample, in the torch frame
    dtype: torch.dtype

    @property
    def __name__(self) -> str:  # torch.fx names call_function targets by it
        return "case_value"

    def __call__(self, *sources: torch.Tensor) -> torch.Tensor:
        batch = sources[0].shape[0] if sources else 1
        flat = [s.detach().double().cpu().numpy() for s in sources]
        out = []
        for b in range(batch):
            value = self.program.run(self.program.key([f[b] for f in flat]))[self.name]
            value = np.asarray(value)
            if value.size != int(np.prod(self.shape)):
                raise ValueError(
                    f"case value '{self.name}' has shape {list(value.shape)} here; the network "
                    f"was converted with {list(self.shape)}"
                )
            out.append(torch.from_numpy(value.astype(np.float64).reshape(self.shape)))
        return torch.stack(out).to(self.dtype)

    def values(self, key: tuple[np.ndarray, ...]) -> torch.Tensor:
        """The value for one case, (*shape), float64."""
        value = np.asarray(self.program.run(key)[self.name], dtype=np.float64)
        if value.size != int(np.prod(self.shape)):
            raise ValueError(f"case value '{self.name}' changes shape between cases")
        return torch.from_numpy(value.reshape(self.shape))

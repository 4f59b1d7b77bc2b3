"""The re-check of every counterexample by a plain forward pass of the ONNX model in onnxruntime.

VNN-LIB numbers a model's inputs ``X_i`` over its inputs flattened in declared order and
concatenated, and its outputs ``Y_j`` likewise; so a flat counterexample is split into the
declared inputs (each in its declared element type) and the outputs are flattened and joined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor

from robustlab.errors import RobustlabError
from robustlab.verify.falsify import in_box32

_NUMPY = {1: np.float32, 10: np.float16, 11: np.float64}  # ONNX TensorProto element types


@dataclass(frozen=True)
class Port:
    """One declared ONNX input: its name, shape (symbolic or missing sizes as 1) and type."""

    name: str
    shape: tuple[int, ...]
    dtype: type

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def onnx_inputs(onnx_bytes: bytes) -> list[Port]:
    """The model's inputs that are not initializers, in declared order."""
    proto = onnx.load_model_from_string(onnx_bytes)
    inits = {i.name for i in proto.graph.initializer}
    ports = []
    for i in proto.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim)
        ports.append(Port(i.name, shape, _NUMPY.get(t.elem_type, np.float32)))
    return ports


class OnnxOracle:
    """Evaluates flat inputs with onnxruntime (the session is created on first use)."""

    def __init__(self, onnx_bytes: bytes, n_inputs: int) -> None:
        self.onnx_bytes = onnx_bytes
        self.n_inputs = n_inputs
        self._ports: list[Port] | None = None
        self._session = None
        self.busy = False  # while a re-check runs (the caller waits a moment for it)

    @property
    def ports(self) -> list[Port]:
        """The declared inputs (read on first use: parsing a large model costs time)."""
        if self._ports is None:
            ports = onnx_inputs(self.onnx_bytes)
            total = sum(p.numel for p in ports)
            if total != self.n_inputs:
                if len(ports) != 1:
                    raise RobustlabError(
                        f"the ONNX inputs hold {total} numbers; the model takes {self.n_inputs}"
                    )
                p = ports[0]  # e.g. a declared shape without its batch dimension
                ports = [Port(p.name, (1, self.n_inputs), p.dtype)]
            self._ports = ports
        return self._ports

    def _sess(self):
        if self._session is None:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = 1
            self._session = ort.InferenceSession(
                self.onnx_bytes, opts, providers=["CPUExecutionProvider"]
            )
        return self._session

    def inputs(self, x: Tensor) -> dict[str, np.ndarray]:
        """The flat input ``x`` split into the declared inputs, each in its own type."""
        flat = x.detach().double().reshape(-1).numpy()
        feeds, k = {}, 0
        for p in self.ports:
            feeds[p.name] = flat[k : k + p.numel].astype(p.dtype).reshape(p.shape)
            k += p.numel
        return feeds

    def __call__(self, x: Tensor) -> np.ndarray:
        """The outputs at ``x``, flattened and joined in declared order (float64)."""
        self.busy = True
        try:
            outs = self._sess().run(None, self.inputs(x))
        finally:
            self.busy = False
        return np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])

    def fed(self, x: Tensor) -> Tensor:
        """``x`` as the model receives it (after the cast to each input's type), flat, float64."""
        return torch.from_numpy(
            np.concatenate([v.astype(np.float64).reshape(-1) for v in self.inputs(x).values()])
        )


def confirm(oracle, lower: Tensor, upper: Tensor, violation, x: Tensor) -> dict | None:
    """``{"x", "y"}`` when ``x`` (as fed to the model) lies in the box's float32 points and the
    model's output there reaches the unsafe region (``violation(y) <= 0``), else None."""
    fed = oracle.fed(x) if hasattr(oracle, "fed") else x.double().reshape(-1)
    if not in_box32(fed, lower, upper) or not (fed.float().double() == fed).all():
        return None
    y = np.asarray(oracle(fed.float()), dtype=np.float64).reshape(-1)
    if not np.isfinite(y).all():
        return None
    v = violation(torch.from_numpy(y)[None])
    if float(v.reshape(-1)[0]) > 0:
        return None
    return {"x": fed.tolist(), "y": y.tolist()}

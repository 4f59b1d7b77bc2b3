"""The onnxruntime cross-check of a converted model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

from robustlab._onnx.importer import graph_inputs, input_dims
from robustlab._onnx.ops_math import is_discrete
from robustlab.errors import RobustlabError


@dataclass(frozen=True)
class Agreement:
    """How a converted module agrees with onnxruntime on random inputs, sample by sample."""

    max_abs: float  # largest |module - onnxruntime| over every output of every sample
    scale: float  # largest |onnxruntime output|
    per_sample: tuple[float, ...]  # largest difference per sample
    discrete: bool  # the graph has operations whose output jumps (sign, argmax, comparisons)

    def relative(self) -> float:
        """The largest difference relative to the output scale: max_abs / (1 + scale)."""
        return self.max_abs / (1.0 + self.scale)

    def agrees(self, tolerance: float) -> bool:
        """Every sample within ``tolerance * (1 + scale)``; for a discrete graph, most samples
        (a rounding difference next to a jump may flip one output, a wrong conversion flips
        nearly all)."""
        bound = tolerance * (1.0 + self.scale)
        ok = sum(1 for d in self.per_sample if d <= bound)
        return ok == len(self.per_sample) or (self.discrete and ok * 4 >= 3 * len(self.per_sample))


_WIDER = {(onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE),
          (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT),
          (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)}  # fmt: skip


def widen_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with initializers stored in a narrower float type than the graph declares them
    (e.g. float32 weights of a float64 network, which onnxruntime refuses) converted to the
    declared type: the values are unchanged. Returns ``proto`` itself when nothing needs it."""
    declared = {v.name: v.type.tensor_type.elem_type
                for v in [*proto.graph.value_info, *proto.graph.input]}  # fmt: skip
    fix = [t for t in proto.graph.initializer if (t.data_type, declared.get(t.name)) in _WIDER]
    if not fix:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for t in out.graph.initializer:
        target = declared.get(t.name)
        if (t.data_type, target) in _WIDER:
            array = numpy_helper.to_array(t).astype(helper.tensor_dtype_to_np_dtype(target))
            t.CopyFrom(numpy_helper.from_array(array, t.name))
    return out


def _session(proto: onnx.ModelProto, data: bytes | None = None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(
            data or proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RobustlabError(f"onnxruntime cannot load the model ({first[:300]})") from None


def run_onnxruntime(proto: onnx.ModelProto, x: np.ndarray, session=None) -> np.ndarray:
    """The ONNX model on flat samples ``x`` (n, total) run one at a time by onnxruntime, in VNN-LIB
    order: returns (n, outputs) with every output flattened and concatenated."""
    session = session or _session(proto)
    inputs = graph_inputs(proto)
    dims = [input_dims(i) for i in inputs]
    dtypes = [helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in inputs]
    rows = []
    for sample in np.asarray(x).reshape(len(x), -1):
        feeds, start = {}, 0
        for info, d, dt in zip(inputs, dims, dtypes, strict=True):
            n = math.prod(d)
            feeds[info.name] = sample[start : start + n].reshape(d).astype(dt)
            start += n
        try:
            outs = session.run(None, feeds)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RobustlabError(f"onnxruntime cannot run the model ({first[:300]})") from None
        rows.append(np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs]))
    return np.stack(rows)


def check_against_onnxruntime(
    proto: onnx.ModelProto,
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    n: int = 8,
    seed: int = 0,
    data: bytes | None = None,
) -> Agreement:
    """Compare the module with onnxruntime on ``n`` random inputs (uniform in [0, 1] and normal);
    ``data``: the serialized ``proto`` when at hand (large models serialize slowly)."""
    gen = torch.Generator().manual_seed(seed)
    normal = n // 4
    x = torch.cat(
        [torch.rand(n - normal, *input_shape, generator=gen, dtype=torch.float64),
         torch.randn(normal, *input_shape, generator=gen, dtype=torch.float64)]
    )  # fmt: skip
    x = x.to(torch.float32)  # what the model's users feed; float64 models cast it themselves
    reference = run_onnxruntime(proto, x.numpy(), _session(proto, data))
    with torch.no_grad():
        theirs = module(x).double().reshape(n, -1).numpy()
    if reference.shape != theirs.shape:
        raise RobustlabError(
            f"onnxruntime gives {reference.shape[1]} output values per sample, the module "
            f"{theirs.shape[1]}"
        )
    with np.errstate(invalid="ignore"):
        diff = np.abs(reference - theirs)
    diff[(reference == theirs) | (np.isnan(reference) & np.isnan(theirs))] = 0.0  # inf == inf
    # NaN on one side only: inputs outside an operation's domain (sqrt of a negative, ...), where
    # runtimes differ in NaN propagation (onnxruntime's max skips NaN, torch.amax keeps it):
    # those entries are not compared unless nothing else is
    one_nan = np.isnan(reference) ^ np.isnan(theirs)
    diff[one_nan] = 0.0 if (~one_nan).any() else np.inf
    per_sample = tuple(float(d.max()) if d.size else 0.0 for d in diff)
    finite = np.abs(reference[np.isfinite(reference)])
    discrete = is_discrete(module)
    return Agreement(
        max(per_sample), float(finite.max()) if finite.size else 0.0, per_sample, discrete
    )

"""The onnxruntime cross-check of a converted model."""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from robustlab.errors import RobustlabError


def check_against_onnxruntime(
    proto: onnx.ModelProto,
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    n: int = 8,
    seed: int = 0,
) -> float:
    """Max absolute difference between onnxruntime and the module on n random inputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    info = session.get_inputs()[0]
    elem = next(i for i in proto.graph.input if i.name == info.name).type.tensor_type.elem_type
    onnx_dtype = helper.tensor_dtype_to_np_dtype(elem)
    unbatched = len(info.shape) == len(input_shape)
    batch = info.shape[0] if not unbatched and isinstance(info.shape[0], int) else None
    chunk = 1 if unbatched else batch or max(n, 1)
    total = math.ceil(n / chunk) * chunk
    gen = torch.Generator().manual_seed(seed)
    normal = total // 4
    x = torch.cat(
        [torch.rand(total - normal, *input_shape, generator=gen),
         torch.randn(normal, *input_shape, generator=gen)]
    )  # fmt: skip
    feeds = [x[i] for i in range(total)] if unbatched else list(x.split(chunk))
    ours = [session.run(None, {info.name: f.numpy().astype(onnx_dtype)})[0] for f in feeds]
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    with torch.no_grad():
        theirs = module(x.to(dtype)).double().numpy().reshape(-1)
    reference = np.concatenate([np.asarray(o, dtype=np.float64).reshape(-1) for o in ours])
    if reference.shape != theirs.shape:
        raise RobustlabError(
            f"onnxruntime gives {reference.size} output values, the module {theirs.size}"
        )
    return float(np.max(np.abs(reference - theirs)))

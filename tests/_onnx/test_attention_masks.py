"""Masked attention exported by torch.onnx (the TorchScript exporter: a constant mask added to
the scores, or selected in with Where, before Softmax; a boolean SDPA mask as PyTorch's safe
softmax ``Where(IsNaN(s), 0, s)``) imports, agrees with onnxruntime, and its bounds contain
sampled outputs; a query with every key masked is refused in one line, by the CLI with exit 2."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch

from robustlab._onnx import check_against_onnxruntime, onnx_to_torch
from robustlab.bounds import compute_bounds
from robustlab.errors import UnsupportedOperation
from robustlab.threat import LpBall

from ..bounds.mask_nets import PATTERN, L, Sdpa, make

EXPORTED = [
    "sdpa-causal", "sdpa-bool", "sdpa-float", "mha-bool", "mha-padding", "mha-padding-float",
    "layer-causal", "layer-padding", "masked-fill", "where",
]  # fmt: skip


def export(net: torch.nn.Module) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, L, 4),), buf, dynamo=False, opset_version=17)
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize("name", EXPORTED)
def test_exported_masked_attention_imports_agrees_and_bounds_contain_samples(name):
    proto = export(make(name))
    ops = {n.op_type for n in proto.graph.node}
    assert "Softmax" in ops and ops & {"Add", "Where"}
    gm, shape = onnx_to_torch(proto)
    check = check_against_onnxruntime(proto, gm, shape)
    assert check.relative() < 1e-5, check
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, *shape, generator=g)
    threat = LpBall("inf", 0.1)
    pts = threat.sample(x0.double(), 10_000, g)
    with torch.no_grad():
        out = gm(pts[:, 0].float()).double().reshape(len(pts), -1)
    for method in ("ibp", "crown"):
        b = compute_bounds(gm, (threat, x0), method)
        lo, hi = b.lower.reshape(1, -1).double(), b.upper.reshape(1, -1).double()
        assert torch.isfinite(lo).all() and torch.isfinite(hi).all(), method
        tol = 1e-5 * (1 + out.abs().max())  # the module runs in float32
        assert (out >= lo - tol).all() and (out <= hi + tol).all(), method


def test_safe_softmax_becomes_one_call():
    proto = export(make("sdpa-bool"))
    assert {"IsNaN", "Where"} <= {n.op_type for n in proto.graph.node}
    gm, _ = onnx_to_torch(proto)
    calls = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert torch._safe_softmax in calls and torch.isnan not in calls


def _every_key_masked() -> onnx.ModelProto:
    empty = PATTERN.clone()
    empty[1] = False
    return export(make_sdpa(empty))


def make_sdpa(mask):
    torch.manual_seed(0)
    return Sdpa(mask).eval()


def test_a_query_without_keys_is_refused(tmp_path):
    proto = _every_key_masked()
    gm, shape = onnx_to_torch(proto)  # onnxruntime and the module agree (0 there)
    assert check_against_onnxruntime(proto, gm, shape).relative() < 1e-5
    with pytest.raises(UnsupportedOperation, match="every entry of softmax row"):
        compute_bounds(gm, (LpBall("inf", 0.1), torch.rand(1, *shape)), "crown")
    path = tmp_path / "empty_row.onnx"
    onnx.save(proto, path)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).random((2, L, 4), dtype=np.float32), y=[0, 1])
    proc = subprocess.run(
        [sys.executable, "-c", "from robustlab.cli import main; main()", "certify",
         "--model", str(path), "--data", str(data), "--eps", "0.01",
         "--out", str(tmp_path / "c.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "every entry of softmax row" in err, err

"""Gzipped ONNX files are read wherever a model path is accepted, recognised by their first
bytes (not their name)."""

from __future__ import annotations

import gzip

import onnx
import pytest
import torch

from robustlab._onnx import torch_to_onnx
from robustlab.errors import RobustlabError
from robustlab.model import load_model, read_model_bytes


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return torch_to_onnx(net.eval(), (3,)).SerializeToString()


@pytest.mark.parametrize("name", ["net.onnx.gz", "net.onnx", "net.gz"])
def test_gzipped_file_loads_whatever_its_name(tmp_path, onnx_bytes, name) -> None:
    (tmp_path / "plain.onnx").write_bytes(onnx_bytes)
    (tmp_path / name).write_bytes(gzip.compress(onnx_bytes))
    plain, packed = load_model(tmp_path / "plain.onnx"), load_model(tmp_path / name)
    x = torch.rand(5, 3)
    with torch.no_grad():
        assert torch.equal(plain.module(x), packed.module(x))
    assert packed.onnx_bytes == onnx_bytes and read_model_bytes(tmp_path / name) == onnx_bytes
    onnx.load_model_from_string(packed.onnx_bytes)  # what onnxruntime re-checks run


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: gzip.compress(b)[:-20], "truncated gzip data"),
        (lambda b: b"\x1f\x8b" + b"\x00" * 30, "corrupt gzip data"),
        (lambda b: gzip.compress(b"not a model"), "not a valid ONNX model"),
    ],
)
def test_bad_gzip_is_one_line(tmp_path, onnx_bytes, mangle, match) -> None:
    path = tmp_path / "bad.onnx.gz"
    path.write_bytes(mangle(onnx_bytes))
    with pytest.raises(RobustlabError, match=match) as info:
        load_model(path)
    assert "\n" not in str(info.value)

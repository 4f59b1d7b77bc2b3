"""``robustlab explain`` end to end (in-process), and its report."""

import json

import pytest
import torch

from robustlab._onnx import torch_to_onnx
from robustlab.report import render_html

from ..conftest import run_cli as run

REQUIRED = {"method", "attributions", "n_forward", "n_backward", "seconds"}


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory, cnn):
    import onnx

    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    onnx.save(torch_to_onnx(cnn, (1, 8, 8)), str(path))
    return path


@pytest.mark.parametrize(
    "method,steps",
    [
        ("integrated-gradients", 20),
        ("sobol", 8),
        ("grad-cam", None),
        ("saliency", None),
        ("input-x-gradient", None),
        ("smoothgrad", 4),
        ("occlusion", None),
    ],
)
def test_explain_command(method, steps, monkeypatch, capsys, tmp_path, cnn_onnx):
    out = tmp_path / "r.json"
    args = ["explain", "--model", cnn_onnx, "--data", "digits", "--method", method, "--n", 5]
    args += ["--out", out] + (["--steps", steps] if steps else [])
    code, stdout, stderr = run(monkeypatch, capsys, *args)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert REQUIRED <= report.keys() and report["method"] == method
    assert ("delta" in report) == (method == "integrated-gradients")
    shape = [8, 8] if method == "sobol" else [1, 8, 8]
    assert len(report["attributions"]) == 5
    a = report["attributions"][0]
    assert [len(a), len(a[0])] + ([len(a[0][0])] if len(shape) == 3 else []) == shape
    if method == "integrated-gradients":
        assert len(report["delta"]) == 5 and report["settings"]["n_steps"] == 20
        assert report["n_forward"] == 5 * 22 + 5 and report["n_backward"] == 5 * 20
    html = out.with_suffix(".html").read_text()
    assert "attribution heat-maps" in html and "data:image/png;base64," in html
    assert "run id:" in stdout


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "lime"], "unknown explanation method 'lime'"),
        (["--method", "saliency", "--steps", "3"], "--steps applies to"),
        (["--method", "saliency", "--target", "dog"], "--target expects"),
        (["--method", "sobol", "--samples", "0"], "--samples must be a positive"),
        (["--method", "osa-das", "--samples", "0"], "--samples must be a positive"),
        (["--method", "integrated-gradients", "--samples", "3"], "--samples applies to"),
        (["--method", "ig", "--steps", "0"], "--steps must be a positive"),  # ig: an alias
        (["--method", "gradcam"], "did you mean 'grad-cam'"),
        (["--method", "saliency", "--target", "11"], r"lie in \[0, 9\]"),
        (["--method", "saliency", "--backend", "spark"], "unknown backend 'spark'; known: local"),
        (["--method", "saliency", "--shard-size", "0"], "--shard-size"),
        (["--method", "saliency", "--backend", "dask", "--workers", "0"], "--workers"),
    ],
)
def test_bad_input_exits_2(extra, message, monkeypatch, capsys, cnn_onnx):
    import re

    args = ["explain", "--model", cnn_onnx, "--data", "digits", "--n", 2, *extra]
    code, _, stderr = run(monkeypatch, capsys, *args)
    assert code == 2 and re.search(message, stderr), stderr
    assert len(stderr.strip().splitlines()) == 1


def test_target_label(monkeypatch, capsys, tmp_path, cnn_onnx, digits):
    out = tmp_path / "r.json"
    args = ["explain", "--model", cnn_onnx, "--data", "digits", "--method", "saliency"]
    code, _, err = run(monkeypatch, capsys, *args, "--n", 6, "--target", "label", "--out", out)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["classes"] == digits.y[:6].tolist() and report["settings"]["target"] == "label"


def test_report_without_attributions_renders():
    html = render_html(
        {
            "kind": "explain",
            "model": {"name": "m"},
            "data": {"name": "d", "n": 0},
            "clean_accuracy": 1.0,
            "attributions": [],
        }  # fmt: skip
    )
    assert "heat-maps" not in html


def test_shards_on_the_command_line_give_the_same_report(monkeypatch, capsys, tmp_path, cnn_onnx):
    reports = []
    for extra in ([], ["--shard-size", "2"]):
        out = tmp_path / f"r{len(reports)}.json"
        args = ["explain", "--model", cnn_onnx, "--data", "digits", "--method", "smoothgrad"]
        code, _, err = run(monkeypatch, capsys, *args, "--n", 5, "--samples", 3, "--out", out,
                           *extra)  # fmt: skip
        assert code == 0, err
        reports.append(json.loads(out.read_text()))
    whole, sharded = reports
    assert "shards" not in whole["settings"] and "shard" not in whole["settings"]
    assert sharded["settings"]["shards"] == {"backend": "local", "shard_size": 2}
    a, b = (torch.tensor(r["attributions"]) for r in reports)
    torch.testing.assert_close(
        b, a, rtol=0, atol=64 * torch.finfo(torch.float32).eps * a.abs().max()
    )
    assert sharded["classes"] == whole["classes"] and sharded["n_forward"] == whole["n_forward"]

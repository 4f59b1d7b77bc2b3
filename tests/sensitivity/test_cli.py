"""``robustlab sensitivity`` end to end, in-process: the report, its page, the run history, and
bad input as one line with exit code 2."""

import json

import pytest

from robustlab import store

from ..conftest import run_cli as run

FAST = ("--samples", "4", "--iterations", "5", "--draws", "1", "--noise", "0,0.2",
        "--robust-n", "10", "--certify-n", "10")  # fmt: skip


def test_sensitivity_command_writes_the_report_page_and_history(monkeypatch, capsys, tmp_path):
    out, db = tmp_path / "s.json", tmp_path / "runs.sqlite"
    code, stdout, err = run(monkeypatch, capsys, "sensitivity", "--model", "zoo:mlp", "--data",
                            "digits", "--n", "40", "--eps", "0.02", *FAST, "--out", out,
                            "--db", db)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["kind"] == "sensitivity" and [x["name"] for x in r["layers"]] == ["1", "3", "5"]
    assert {"whole_model", "noise", "precision", "correlations", "metrics"} <= set(r)
    assert r["model"]["name"] == "zoo:mlp"
    html = out.with_suffix(".html").read_text()
    assert "Per-layer sensitivity" in html and "Emulated precision" in html
    assert html.count("data:image/png;base64,") == 3
    assert "Spearman" in stdout and "Hessian trace" in stdout
    (run_,) = store.list_runs(db, 5)
    assert run_.metrics["hessian_trace"] == r["whole_model"]["hessian_trace"]
    assert "int8 robust_accuracy" in run_.metrics


@pytest.mark.parametrize(
    "args,message",
    [
        (("--formats", "fp8"), "unknown formats entry 'fp8'"),
        (("--layer-formats", "int3"), "unknown layer_formats entry 'int3'"),
        (("--noise", "0,-1"), "noise_levels must be finite numbers >= 0"),
        (("--noise", "a"), "--noise expects numbers"),
        (("--samples", "0"), "samples must be a positive integer"),
        (("--eps", "-1"), "eps"),
        (("--model", "missing.onnx"), "missing.onnx"),
        (("--calibration", "missing.npz"), "missing.npz"),
    ],
)
def test_sensitivity_bad_input_exits_2(monkeypatch, capsys, tmp_path, args, message):
    opts = {
        "--model": "zoo:mlp",
        "--data": "digits",
        "--n": "10",
        **dict(zip(FAST[::2], FAST[1::2], strict=True)),
    }
    opts.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [x for kv in opts.items() for x in kv]
    code, _, err = run(monkeypatch, capsys, "sensitivity", *argv, "--out", tmp_path / "s.json",
                       "--db", tmp_path / "runs.sqlite")  # fmt: skip
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()

"""``robustlab corrupt`` end to end, in-process."""

import json

import pytest

from ..conftest import run_cli as run


def test_corrupt_command_writes_the_report(monkeypatch, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, err = run(
        monkeypatch,
        capsys,
        "corrupt",
        "--model",
        "zoo:cnn",
        "--data",
        "digits",
        "--n",
        "60",
        "--corruptions",
        "gaussian_noise,frost,saturate",
        "--severities",
        "1,5",
        "--baseline",
        "zoo:mlp",
        "--out",
        out,
        "--db",
        tmp_path / "runs.sqlite",
    )
    assert code == 0, err
    r = json.loads(out.read_text())
    assert {
        "clean_accuracy",
        "table",
        "mean_corruption_accuracy",
        "mce",
        "transformations",
        "frequency_channel",
    } <= set(r)
    assert len(r["table"]) == 6 and r["mce"] is not None and r["kind"] == "corrupt"
    assert r["settings"]["severities"] == [1, 5]
    html = out.with_suffix(".html").read_text()
    assert "Corruptions" in html and "Octave-band noise" in html and "mCE" in html
    assert html.count("data:image/png;base64,") >= 2
    assert "mean corruption accuracy" in stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (("--severities", "0-6"), "severities must be integers in 1..5"),
        (("--corruptions", "rain"), "unknown corruption 'rain'"),
        (("--baseline", "missing.onnx"), "missing.onnx"),
    ],
)
def test_corrupt_bad_input_exits_2(monkeypatch, capsys, tmp_path, args, message):
    code, _, err = run(
        monkeypatch,
        capsys,
        "corrupt",
        "--model",
        "zoo:cnn",
        "--data",
        "digits",
        "--n",
        "10",
        *args,
        "--out",
        tmp_path / "r.json",
        "--db",
        tmp_path / "runs.sqlite",
    )
    assert code == 2 and message in err and "Traceback" not in err

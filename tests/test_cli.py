"""The CLI end to end, called in-process (``main`` exits like the console script)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from robustlab import zoo
from robustlab._onnx import torch_to_onnx

from .conftest import run_cli as run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    db = out / "runs.sqlite"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from robustlab.cli import main; main()",
            "demo",
            "--out",
            str(out),
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out, db, proc.stdout


def test_demo_report(demo):
    out, _, stdout = demo
    report = json.loads((out / "report.json").read_text())
    assert {"model", "data", "clean_accuracy", "curve"} <= report.keys()
    assert report["clean_accuracy"] >= 0.93
    curve = report["curve"]
    assert len(curve) >= 3
    robust = [p["robust_accuracy"] for p in curve]
    assert robust == sorted(robust, reverse=True) and robust[-1] < robust[0]
    for p in curve:
        assert p["certified_accuracy"] <= p["robust_accuracy"] <= report["clean_accuracy"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained, offline
    assert str(out / "report.json") in stdout


def test_runs_list_show_compare(demo, monkeypatch, capsys):
    _, db, _ = demo
    code, out, _ = run(monkeypatch, capsys, "runs", "list", "--db", db)
    assert code == 0 and "robustlab demo" in out
    code, out, _ = run(monkeypatch, capsys, "runs", "show", "1", "--db", db)
    assert code == 0 and json.loads(out)["metrics"]["clean_accuracy"] >= 0.93
    page = db.parent / "compare.html"
    code, out, _ = run(monkeypatch, capsys, "runs", "compare", "1", "1", "--db", db, "--out", page)
    assert code == 0 and "run 1" in out and "clean_accuracy" in out
    assert page.read_text().count("data:image/png;base64,") > 0
    code, _, err = run(monkeypatch, capsys, "runs", "show", "99", "--db", db)
    assert code == 2 and "no run with id 99" in err


@pytest.fixture(scope="module")
def files(tmp_path_factory, mlp, digits):
    d = tmp_path_factory.mktemp("files")
    onnx.save(torch_to_onnx(mlp, zoo.INPUT_SHAPE), d / "mlp.onnx")
    np.savez(d / "data.npz", x=digits.x[:60].numpy(), y=digits.y[:60].numpy())
    np.savez(d / "noy.npz", x=digits.x[:5].numpy())
    np.savez(d / "wrong.npz", x=np.zeros((4, 1, 28, 28), np.float32), y=np.zeros(4, np.int64))
    (d / "corrupt.onnx").write_bytes(b"this is not onnx")
    return d


def test_attack_and_certify_on_onnx_and_npz(files, monkeypatch, capsys, tmp_path):
    db = tmp_path / "runs.sqlite"
    code, _, err = run(
        monkeypatch,
        capsys,
        "attack",
        "--model",
        files / "mlp.onnx",
        "--data",
        files / "data.npz",
        "--eps",
        "0.05,0.1",
        "--norm",
        "inf",
        "--suite",
        "fast",
        "--out",
        tmp_path / "r.json",
        "--db",
        db,
    )
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["robust_accuracy"] <= r["clean_accuracy"] and len(r["curve"]) == 2
    assert r["curve"][1]["robust_accuracy"] <= r["curve"][0]["robust_accuracy"]
    code, _, err = run(
        monkeypatch,
        capsys,
        "certify",
        "--model",
        files / "mlp.onnx",
        "--data",
        files / "data.npz",
        "--eps",
        "0.01",
        "--method",
        "ibp",
        "--out",
        tmp_path / "c.json",
        "--db",
        db,
    )
    assert code == 0, err
    c = json.loads((tmp_path / "c.json").read_text())
    assert 0 <= c["certified_accuracy"] <= c["clean_accuracy"]
    code, _, err = run(
        monkeypatch,
        capsys,
        "attack",
        "--model",
        files / "mlp.onnx",
        "--data",
        files / "data.npz",
        "--eps",
        "0.01",
        "--norm",
        "2",
        "--attacks",
        "pgd",
        "--out",
        tmp_path / "r2.json",
        "--db",
        db,
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "missing.onnx", "--data", "digits", "--eps", "0.1"], "model file not found"),
        (
            ["--model", "{d}/corrupt.onnx", "--data", "digits", "--eps", "0.1"],
            "not a valid ONNX model",
        ),
        (["--model", "{d}/mlp.onnx", "--data", "{d}/noy.npz", "--eps", "0.1"], "missing array 'y'"),
        (
            ["--model", "{d}/mlp.onnx", "--data", "{d}/wrong.npz", "--eps", "0.1"],
            "expects (1, 8, 8)",
        ),
        (["--model", "{d}/mlp.onnx", "--data", "{d}/data.npz", "--eps", "-0.1"], "eps must be"),
        (
            ["--model", "{d}/mlp.onnx", "--data", "missing.npz", "--eps", "0.1"],
            "data file not found",
        ),
        (
            ["--model", "{d}/mlp.onnx", "--data", "digits", "--eps", "0.1", "--norm", "3"],
            "norm must",
        ),
        (
            ["--model", "{d}/mlp.onnx", "--data", "digits", "--eps", "abc"],
            "--eps expects a number or a fraction",
        ),
        (
            ["--model", "{d}/mlp.onnx", "--data", "digits", "--eps", "0.1", "--backend", "spark"],
            "unknown backend 'spark'; known: local, dask",
        ),
        (
            ["--model", "{d}/mlp.onnx", "--data", "digits", "--eps", "0.1", "--shard-size", "0"],
            "--shard-size",
        ),
    ],
)
@pytest.mark.parametrize("command", ["attack", "certify"])
def test_bad_input_is_one_line_exit_2(files, monkeypatch, capsys, tmp_path, command, args, message):
    args = [a.format(d=files) for a in args]
    code, _, err = run(
        monkeypatch,
        capsys,
        command,
        *args,
        "--out",
        tmp_path / "x.json",
        "--db",
        tmp_path / "db.sqlite",
    )
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from robustlab.cli import main; main()",
            "attack",
            "--model",
            str(tmp_path / "no.onnx"),
            "--data",
            "digits",
            "--eps",
            "0.1",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: model file not found: {tmp_path / 'no.onnx'}"


def test_certify_methods_are_ordered_on_the_demo_model(monkeypatch, capsys, tmp_path):
    code, _, err = run(
        monkeypatch,
        capsys,
        "certify",
        "--model",
        "zoo:mlp",
        "--data",
        "digits",
        "--eps",
        "0.03",
        "--n",
        "120",
        "--method",
        "ibp,crown,alpha-crown",
        "--out",
        tmp_path / "c.json",
        "--db",
        tmp_path / "db.sqlite",
    )
    assert code == 0, err
    r = json.loads((tmp_path / "c.json").read_text())
    acc = {m["method"]: m["certified_accuracy"] for m in r["per_method"]}
    assert acc["ibp"] <= acc["crown"] <= acc["alpha-crown"] <= r["clean_accuracy"]
    assert acc["crown"] > acc["ibp"]
    assert 0 < r["tightness"] <= 1


def test_certify_in_float32_on_a_cnn(monkeypatch, capsys, tmp_path):
    """Rigorous float32 bounds certify (almost) as many points as float64 ones; a bad precision
    is a one-line error."""

    def certify(precision: str):
        common = ["--model", "zoo:cnn", "--data", "digits", "--eps", "0.02", "--n", "60"]
        out = ["--out", tmp_path / f"{precision}.json", "--db", tmp_path / "db.sqlite"]
        return run(monkeypatch, capsys, "certify", *common, "--precision", precision, *out)

    acc = {}
    for precision in ("float64", "float32"):
        code, _, err = certify(precision)
        assert code == 0, err
        r = json.loads((tmp_path / f"{precision}.json").read_text())
        assert r["settings"]["precision"] == precision
        acc[precision] = r["certified_accuracy"]
    assert acc["float64"] - 0.05 <= acc["float32"] <= acc["float64"]
    code, _, err = certify("half")
    assert code == 2 and err.strip() == "error: precision must be float64 or float32; found 'half'"


def _onnx_with(op_type: str, tmp_path):
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.1] * 12)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op_type, ["h"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / f"{op_type}.onnx"
    onnx.save(model, path)
    np.savez(tmp_path / "d.npz", x=np.full((3, 4), 0.5, np.float32), y=np.zeros(3, np.int64))
    return path


@pytest.mark.parametrize(
    "op,message", [("Hardmax", "ONNX operation 'Hardmax'")]
)  # Softmax: bounded now
def test_unsupported_operation_is_one_line(monkeypatch, capsys, tmp_path, op, message):
    path = _onnx_with(op, tmp_path)
    code, _, err = run(
        monkeypatch,
        capsys,
        "certify",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--eps",
        "0.1",
        "--out",
        tmp_path / "c.json",
        "--db",
        tmp_path / "db.sqlite",
    )
    assert code == 2 and message in err and "supported" in err
    assert len(err.strip().splitlines()) == 1


def test_a_library_error_names_its_parameter_and_the_cli_its_flag(monkeypatch, capsys):
    from robustlab.data import load_data
    from robustlab.errors import RobustlabError

    with pytest.raises(RobustlabError, match="^n must be a positive number") as e:
        load_data("digits").subset(0)
    assert e.value.param == "n"
    code, _, err = run(monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data", "digits",
                       "--eps", "0.1", "--n", "0")  # fmt: skip
    assert code == 2 and err.strip() == "error: --n must be a positive number of examples; found 0"


def test_library_parameter_shown_as_the_command_flag(monkeypatch, capsys, tmp_path):
    """audit_job's ``sigma`` is the audit command's ``--smoothing``; ``budget`` is ``--budget``."""
    base = ["audit", "--model", "zoo:mlp", "--data", "digits", "--out", tmp_path / "a"]
    code, _, err = run(monkeypatch, capsys, *base, "--smoothing", "-1")
    assert code == 2 and "error: --smoothing expects a noise sigma > 0" in err, err
    code, _, err = run(monkeypatch, capsys, *base, "--budget", "0")
    assert code == 2 and "error: --budget must be a positive number" in err, err

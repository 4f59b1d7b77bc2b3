"""``robustlab prune`` and ``robustlab patch`` end to end, in-process."""

import json

import onnx
import pytest
import torch

from robustlab import store
from robustlab._onnx import torch_to_onnx
from robustlab.zoo import mlp

from ..conftest import run_cli as run


def test_prune_command_exports_evaluates_and_records_the_curve(monkeypatch, capsys, tmp_path):
    out, db = tmp_path / "p" / "m.onnx", tmp_path / "runs.sqlite"
    code, stdout, err = run(monkeypatch, capsys, "prune", "--model", "zoo:mlp", "--data", "digits",
                            "--sparsity", "0.5,0.9", "--method", "magnitude,hydra", "--eps", "0.02",
                            "--epochs", "1", "--score-epochs", "1", "--n", "30", "--out", out,
                            "--db", db)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.with_suffix(".json").read_text())
    assert r["kind"] == "prune" and len(r["rows"]) == 4
    assert [(x["method"], x["target_sparsity"]) for x in r["rows"]] == [
        ("magnitude", 0.5), ("magnitude", 0.9), ("hydra", 0.5), ("hydra", 0.9)]  # fmt: skip
    for x in r["rows"]:
        assert (tmp_path / "p" / f"m-{x['method']}-{100 * x['target_sparsity']:g}.onnx").exists()
        assert x["sparsity"] == pytest.approx(x["target_sparsity"], abs=0.01)
        # the exported file holds the zeros
        w = [t for t in onnx.load(x["onnx"]).graph.initializer if len(t.dims) == 2]
        zeros = sum(int((onnx.numpy_helper.to_array(t) == 0).sum()) for t in w)
        assert (
            zeros / sum(int(onnx.numpy_helper.to_array(t).size) for t in w) >= x["sparsity"] - 1e-9
        )
    html = out.with_suffix(".html").read_text()
    assert "Robustness against sparsity" in html and "data:image/png;base64," in html
    (rec,) = store.list_runs(db, 5)
    assert "hydra 0.9 robust_accuracy" in rec.metrics and "dense robust_accuracy" in rec.metrics
    assert "hydra" in stdout


def test_patch_command_table_of_scales(monkeypatch, capsys, tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        p = tmp_path / f"m{seed}.onnx"
        onnx.save(torch_to_onnx(mlp().eval(), (1, 8, 8)), str(p))
        paths.append(p)
    out = tmp_path / "patch.json"
    code, stdout, err = run(monkeypatch, capsys, "patch", "--standard", paths[0], "--robust",
                            paths[1], "--data", "digits", "--eps", "0.02", "--scale", "0,1",
                            "--layers", "1", "--n", "20", "--out", out, "--db",
                            tmp_path / "runs.sqlite")  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["kind"] == "patch" and [x["scale"] for x in r["rows"]] == [0.0, 1.0]
    assert r["rows"][0]["clean_accuracy"] == r["standard"]["clean_accuracy"]
    assert len(r["layers"]) == 1 and len(r["difference"]) == 3
    assert "A robust weight signature" in out.with_suffix(".html").read_text()
    assert "A = 1" in stdout
    (rec,) = store.list_runs(tmp_path / "runs.sqlite", 5)  # the run history has it
    assert rec.command.startswith("robustlab patch") and rec.metrics


@pytest.mark.parametrize(
    "command,args,message",
    [
        ("prune", ("--sparsity", "1.5"), "sparsity must be numbers in [0, 1)"),
        ("prune", ("--sparsity", "x"), "--sparsity expects numbers"),
        ("prune", ("--method", "l1"), "unknown pruning method 'l1'"),
        ("prune", ("--objective", "fgsm"), "unknown objective 'fgsm'"),
        ("prune", ("--structure", "block"), "structure must be one of"),
        ("prune", ("--eps", "-0.1"), "eps"),
        ("prune", ("--score-epochs", "0"), "score_epochs >= 1"),
        ("patch", ("--robust", "zoo:cnn"), "differ in architecture"),
        ("patch", ("--layers", "9"), "layers must be in 1..3"),
        ("patch", ("--scale", "nan"), "scale must be finite"),
        ("patch", ("--robust", "missing.onnx"), "missing.onnx"),
    ],
)
def test_bad_input_exits_2(monkeypatch, capsys, tmp_path, command, args, message):
    if command == "prune":
        opts = {"--model": "zoo:mlp", "--data": "digits", "--eps": "0.02", "--epochs": "0",
                "--sparsity": "0.5", "--n": "5", "--out": str(tmp_path / "m.onnx")}  # fmt: skip
    else:
        opts = {"--standard": "zoo:mlp", "--robust": "zoo:mlp", "--data": "digits", "--eps": "0.02",
                "--scale": "0", "--n": "5", "--out": str(tmp_path / "p.json")}  # fmt: skip
    opts.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [x for kv in opts.items() for x in kv]
    code, _, err = run(monkeypatch, capsys, command, *argv, "--db", tmp_path / "runs.sqlite")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1

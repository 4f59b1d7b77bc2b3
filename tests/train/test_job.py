"""``robustlab train`` end to end: ONNX files, the report with the comparison table and the log,
the run history, and bad input as one line with exit code 2."""

import json

import numpy as np
import onnx
import pytest

from robustlab import store, zoo
from robustlab._onnx import torch_to_onnx
from robustlab.model import load_model

from ..conftest import run_cli as run


def test_train_two_methods(tmp_path, monkeypatch, capsys):
    db = tmp_path / "runs.sqlite"
    code, out, err = run(
        monkeypatch, capsys, "train", "--arch", "mlp", "--data", "digits",
        "--method", "standard,ibp", "--eps", "0.05", "--epochs", "2", "--n", "40",
        "--suite", "fast", "--out", tmp_path / "m.onnx", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    assert (tmp_path / "m.html").exists()
    assert [r["method"] for r in report["comparison"]] == ["standard", "ibp"]
    for r in report["comparison"]:
        assert {
            "clean_accuracy",
            "robust_accuracy",
            "certified_accuracy",
            "train_seconds",
        } <= r.keys()
        assert r["certified_accuracy"] <= r["robust_accuracy"] <= r["clean_accuracy"]
        model = load_model(r["onnx"])  # a valid ONNX file that matches onnxruntime
        assert model.input_shape == (1, 8, 8)
    assert len(report["log"]) == 4
    lines = (tmp_path / "m.log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 1, 2]
    (run_row,) = store.list_runs(db)
    assert run_row.metrics["ibp loss@epoch 2"] == report["log"][-1]["loss"]
    assert (
        run_row.metrics["standard certified_accuracy"]
        == report["comparison"][0]["certified_accuracy"]
    )
    assert "standard" in out and "ibp" in out


def test_train_from_onnx_architecture_on_npz(tmp_path, monkeypatch, capsys):
    arch = tmp_path / "arch.onnx"
    onnx.save(torch_to_onnx(zoo.build("mlp"), (1, 8, 8)), str(arch))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    x = (rng.random((60, 1, 8, 8)) * 0.3 + y[:, None, None, None] * 0.5).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, err = run(
        monkeypatch, capsys, "train", "--arch", arch, "--data", tmp_path / "d.npz",
        "--method", "gaussian", "--eps", "0.1", "--epochs", "10",
        "--out", tmp_path / "g.onnx", "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["data"]["n"] == 12 and report["settings"]["train_n"] == 48
    assert report["clean_accuracy"] >= 0.9


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet"], "--arch expects"),
        (["--method", "madry"], "unknown training method"),
        (["--eps", "-0.1"], "eps must be"),
        (["--data", "missing.npz"], "not found"),
    ],
)
def test_bad_input(args, message, tmp_path, monkeypatch, capsys):
    base = {"--arch": "mlp", "--data": "digits", "--method": "standard", "--eps": "0.1"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [v for kv in base.items() for v in kv]
    code, _, err = run(monkeypatch, capsys, "train", *flat, "--epochs", "1",
                       "--out", tmp_path / "x.onnx")  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_train_new_methods_with_l2_evaluation(tmp_path, monkeypatch, capsys):
    code, out, err = run(
        monkeypatch, capsys, "train", "--arch", "mlp", "--data", "digits",
        "--method", "interpolated-at,mixup,hr,lipschitz", "--eps", "0.1", "--l2-eps", "0.5",
        "--hr-alpha", "0.1", "--hr-r", "0.2", "--epochs", "1", "--n", "30",
        "--out", tmp_path / "m.onnx", "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["settings"]["l2_eps"] == 0.5
    assert report["settings"]["hyperparameters"] == {
        "hr": {"alpha": 0.1, "r": 0.2},
        "lipschitz": {"eps": 0.5},
    }
    rows = {r["method"]: r for r in report["comparison"]}
    assert list(rows) == ["interpolated-at", "mixup", "hr", "lipschitz"]
    for r in rows.values():
        assert r["certified_l2_accuracy"] <= r["robust_l2_accuracy"] <= r["clean_accuracy"]
        assert set(r["certified_by"]) == {"ibp", "crown", "lipschitz"}
    hr = next(p for p in report["per_method"] if p["method"] == "hr")
    assert hr["training"]["hyperparameters"]["alpha"] == 0.1
    # the exported Lipschitz network: its certificate computes L = 1 (float32 weights)
    from robustlab.bounds import global_lipschitz

    lip = load_model(rows["lipschitz"]["onnx"]).module
    assert abs(global_lipschitz(lip, (1, 8, 8)).bound - 1) < 1e-4
    assert rows["lipschitz"]["lipschitz_bound"] == global_lipschitz(lip, (1, 8, 8)).bound
    assert rows["mixup"]["lipschitz_bound"] > 1
    assert "L2 0.5" in out
    (row,) = store.list_runs(tmp_path / "r.sqlite")
    assert (
        row.metrics["lipschitz certified_l2_accuracy"] == rows["lipschitz"]["certified_l2_accuracy"]
    )


def test_certify_training(tmp_path, monkeypatch, capsys):
    arch = tmp_path / "arch.onnx"
    onnx.save(torch_to_onnx(zoo.pretrained("mlp"), (1, 8, 8)), str(arch))
    code, out, err = run(
        monkeypatch, capsys, "train", "--arch", arch, "--finetune", "--data", "digits",
        "--method", "standard", "--certify-training", "--delta", "0.001", "--lr", "0.01",
        "--batch-size", "512", "--eps", "0.05", "--epochs", "1", "--n", "40",
        "--out", tmp_path / "f.onnx", "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "f.json").read_text())
    cert = report["training_certificate"]
    assert cert["delta"] == 0.001 and cert["n"] == 40 and 0 < cert["certified_share"] <= 1
    assert cert["certified_accuracy"] <= cert["clean_accuracy"] <= 1
    assert report["settings"]["certify_training"] is True
    assert [
        json.loads(x)["epoch"] for x in (tmp_path / "f.log.jsonl").read_text().splitlines()
    ] == [1]
    assert "FullCert" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "hr", "--hr-alpha", "1.5"], "alpha (the poisoning share)"),
        (["--method", "hr", "--hr-r", "-1"], "r (the KL radius)"),
        (["--l2-eps", "-0.5"], "eps must be"),
        (["--method", "pgd-at", "--certify-training"], "certify_training bounds plain SGD"),
        (["--arch", "cnn", "--certify-training"], "MLP of Linear and ReLU"),
        (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'; known: adam, sgd"),
        (["--method", "interpolated-at", "--iat-adversary", "mixed"], "adversary must be one of"),
        (["--method", "mixup", "--mix", "hidden"], "mix must be one of input, manifold"),
        (["--method", "interpolated-at", "--mix-alpha", "0"], "alpha must be positive; found 0"),
        (["--select", "first"], "unknown select 'first'; known: last, best"),
        (["--select", "best", "--certify-training"], "it expects select 'last'"),
        (
            ["--method", "interpolated-at", "--iat-adversary", "interpolated", "--mix", "manifold"],
            "expects mix 'input'",
        ),
    ],
)
def test_bad_new_options(args, message, tmp_path, monkeypatch, capsys):
    base = ["--arch", "mlp", "--data", "digits", "--method", "standard", "--eps", "0.1"]
    code, _, err = run(monkeypatch, capsys, "train", *base, *args, "--epochs", "1", "--n", "10",
                       "--out", tmp_path / "x.onnx")  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_optimizer_and_iat_adversary_reach_the_training(tmp_path, monkeypatch, capsys):
    code, _, err = run(
        monkeypatch, capsys, "train", "--arch", "mlp", "--data", "digits",
        "--method", "interpolated-at", "--eps", "0.1", "--optimizer", "sgd",
        "--iat-adversary", "interpolated", "--epochs", "1", "--n", "20",
        "--out", tmp_path / "m.onnx", "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["settings"]["optimizer"] == "sgd"
    assert report["settings"]["hyperparameters"] == {
        "interpolated-at": {"adversary": "interpolated"}
    }
    (training,) = [p["training"] for p in report["per_method"]]
    assert training["hyperparameters"]["optimizer"] == "sgd"
    assert training["hyperparameters"]["adversary"] == "interpolated"


def test_mix_options_reach_mixup_and_interpolated_at(tmp_path, monkeypatch, capsys):
    code, _, err = run(
        monkeypatch, capsys, "train", "--arch", "mlp", "--data", "digits",
        "--method", "mixup,interpolated-at,standard", "--eps", "0.1", "--mix", "manifold",
        "--mix-alpha", "2", "--epochs", "1", "--n", "20",
        "--out", tmp_path / "m.onnx", "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    mixing = {"mix": "manifold", "alpha": 2.0}
    assert report["settings"]["hyperparameters"] == {"mixup": mixing, "interpolated-at": mixing}
    trained = {p["method"]: p["training"]["hyperparameters"] for p in report["per_method"]}
    for name in ("mixup", "interpolated-at"):
        assert trained[name]["mix"] == "manifold" and trained[name]["alpha"] == 2.0
    assert "mix" not in trained["standard"]


def test_select_best_holds_out_training_data(tmp_path, monkeypatch, capsys):
    code, _, err = run(
        monkeypatch, capsys, "train", "--arch", "mlp", "--data", "digits", "--method", "pgd-at",
        "--eps", "0.1", "--select", "best", "--epochs", "2", "--n", "20",
        "--out", tmp_path / "m.onnx", "--db", tmp_path / "r.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    settings = report["settings"]
    assert settings["select"] == "best" and settings["val_n"] == round(1347 * 0.2)
    assert settings["train_n"] == 1347 - settings["val_n"]
    (training,) = [p["training"] for p in report["per_method"]]
    assert training["hyperparameters"]["select"] == "best" and training["best_epoch"] in (1, 2)
    assert all("val_robust_accuracy" in e for e in report["log"])

"""``robustlab mix`` end to end (in-process) and its bad input: one line, exit 2."""

import json

import onnx
import pytest
import torch

from robustlab import store
from robustlab._onnx import torch_to_onnx
from robustlab.model import load_model
from robustlab.zoo import mlp

from ..conftest import run_cli as run


@pytest.fixture
def members(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        p = tmp_path / f"m{seed}.onnx"
        onnx.save(torch_to_onnx(mlp().eval(), (1, 8, 8)), str(p))
        paths.append(p)
    return paths


def test_mix_command_exports_reports_and_records(monkeypatch, capsys, tmp_path, members):
    out, db = tmp_path / "o" / "mix.onnx", tmp_path / "runs.sqlite"
    code, stdout, err = run(monkeypatch, capsys, "mix", "--accurate", members[0], "--robust",
                            members[1], "--data", "digits", "--eps", "0.02", "--strengths",
                            "1,0.9", "--n", "24", "--out", out, "--db", db)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.with_suffix(".json").read_text())
    assert r["kind"] == "mix" and len(r["frontier"]) == 5 and r["onnx"] == str(out)
    assert sum(row["fit_target"] for row in r["frontier"]) == 1  # MixedNUTS's own strength
    x = torch.rand(3, 1, 8, 8)
    assert load_model(out).module(x).shape == (3, 10)  # the exported mixture is one graph
    assert "Mixed classifiers: clean / robust frontier" in out.with_suffix(".html").read_text()
    (rec,) = store.list_runs(db, 5)
    assert "mix q=0.9 robust_accuracy@0.02" in rec.metrics
    assert "mix q=1" in stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strengths", "0,2"], "strengths"),
        (["--eps", "-1"], "eps"),
        (["--fit-share", "1.5"], "fit_share"),
    ],
)
def test_mix_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, members, args, needle):
    base = {"--accurate": members[0], "--robust": members[1], "--data": "digits", "--eps": "0.02",
            "--n": "20", "--out": tmp_path / "m.onnx", "--db": tmp_path / "r.sqlite"}  # fmt: skip
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    code, _, err = run(monkeypatch, capsys, "mix", *[s for kv in base.items() for s in kv])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err


def test_mix_missing_model_is_one_line(monkeypatch, capsys, tmp_path, members):
    code, _, err = run(monkeypatch, capsys, "mix", "--accurate", tmp_path / "no.onnx", "--robust",
                       members[1], "--data", "digits", "--eps", "0.02", "--out",
                       tmp_path / "m.onnx")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1

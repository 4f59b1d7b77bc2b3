"""``device`` (issue 26): cpu, cuda or auto in the Python API and ``--device`` on every command
that computes. No test needs a GPU: cuda is checked only where this machine has none."""

from __future__ import annotations

import math

import pytest
import torch

import robustlab as rl
from robustlab.errors import RobustlabError
from robustlab.inputs import fit, resolve_device
from robustlab.jobs import attack_job, certify_job

from .conftest import run_cli

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
AUTO = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == AUTO
    assert resolve_device(" Auto ") == AUTO
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(RobustlabError, match="unknown device 'gpu'.*cpu, cuda, auto"):
        resolve_device("gpu")


@NO_CUDA
def test_cuda_without_cuda_names_the_parameter():
    for name in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(RobustlabError, match="device .* is not available") as e:
            resolve_device(name)
        assert e.value.param == "device"


def test_fit_moves_model_and_data(mlp, digits):
    data = digits.subset(8)
    module, moved = fit(mlp, data, device="auto")
    assert moved.x.device.type == AUTO.type and moved.y.device.type == AUTO.type
    assert next(module.parameters()).device.type == AUTO.type
    module.to("cpu")
    assert fit(mlp, data)[1].x is data.x  # None: where they are (no move, no copy)
    assert fit(mlp, data, device="cpu")[1].x is data.x


def test_api_device_keyword_same_results(mlp, digits):
    data = digits.subset(16)
    threat = rl.LpBall("inf", 0.05)
    cpu = rl.certify(mlp, data, threat, "ibp", device="cpu")
    auto = rl.certify(mlp, data, threat, "ibp", device="auto")
    mlp.to("cpu")
    assert math.isclose(cpu.certified_accuracy, auto.certified_accuracy, abs_tol=1 / 16)
    with pytest.raises(RobustlabError, match="unknown device"):
        rl.certify(mlp, data, threat, "ibp", device="tpu")


def test_jobs_cpu_and_auto_agree():
    a = attack_job("zoo:mlp", "digits", [0.05], attacks=["fgsm"], n=16, device="cpu")
    b = attack_job("zoo:mlp", "digits", [0.05], attacks=["fgsm"], n=16, device="auto")
    assert a["clean_accuracy"] == b["clean_accuracy"]
    assert abs(a["robust_accuracy"] - b["robust_accuracy"]) <= 1 / 16
    c = certify_job("zoo:mlp", "digits", [0.02], method="ibp", n=16, device="auto")
    assert 0 <= c["certified_accuracy"] <= c["clean_accuracy"]


@NO_CUDA
def test_cli_device_cuda_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data",
                             "digits", "--eps", "0.02", "--n", "4", "--device", "cuda",
                             "--out", tmp_path / "c.json")  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --device 'cuda' is not available"), err


def test_cli_device_auto(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data",
                             "digits", "--eps", "0.02", "--n", "8", "--method", "ibp",
                             "--device", "auto", "--out", tmp_path / "c.json",
                             "--db", tmp_path / "db.sqlite")  # fmt: skip
    assert code == 0, err
    assert "certified accuracy" in out


def test_every_computing_command_has_device():
    from typer.main import get_command

    from robustlab.cli import app

    group = get_command(app)
    computing = ["demo", "audit", "attack", "corrupt", "certify", "explain", "train", "smooth",
                 "sensitivity", "prune", "patch", "mix", "conformal", "detect", "blindspots"]  # fmt: skip
    for name in computing:
        opts = {o for p in group.commands[name].params for o in p.opts}
        assert "--device" in opts, name

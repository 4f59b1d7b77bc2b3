"""``robustlab attack --surrogate``: the transfer attack from the command line."""

import json
from copy import deepcopy

import pytest
import torch
from torch import nn

from ..conftest import run_cli as run


@pytest.fixture(scope="module")
def models(mlp, tmp_path_factory):
    """The target (zoo MLP) and two TorchScript files: a surrogate (the same MLP with slightly
    perturbed weights, so its examples transfer) and one that expects another input shape."""
    d = tmp_path_factory.mktemp("transfer")
    gen = torch.Generator().manual_seed(1)
    copy = deepcopy(mlp)
    copy.load_state_dict(
        {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in mlp.state_dict().items()}
    )
    torch.jit.trace(copy.eval(), torch.rand(2, 1, 8, 8)).save(str(d / "surrogate.pt"))
    wide = nn.Sequential(nn.Flatten(), nn.Linear(100, 10)).eval()
    torch.jit.trace(wide, torch.rand(2, 1, 10, 10)).save(str(d / "wide.pt"))
    return d


def test_transfer_attack_from_a_surrogate(models, monkeypatch, capsys, tmp_path):
    out = tmp_path / "t.json"
    code, stdout, err = run(
        monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data", "digits", "--eps", "0.1",
        "--n", "60", "--surrogate", models / "surrogate.pt", "--out", out,
        "--db", tmp_path / "runs.sqlite",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["attacks"] == ["transfer"]  # a surrogate and no attacks: transfer alone
    assert report["settings"]["surrogate"]["kind"] == "torchscript"
    (rec,) = report["per_attack"]
    assert rec["attack"] == "transfer" and rec["n_broken"] > 0
    assert rec["n_backward"] == 0  # the target is never differentiated, only checked
    assert report["robust_accuracy"] < report["clean_accuracy"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--attacks", "transfer"], "the transfer attack needs a surrogate model"),
        (["--attacks", "pgd", "--surrogate", "{d}/surrogate.pt"], "only by the transfer attack"),
        (
            ["--surrogate", "{d}/wide.pt"],
            "surrogate model failed on data 'digits' of shape (1, 8, 8)",
        ),
        (["--surrogate", "{d}/missing.pt"], "model file not found"),
    ],
)
def test_surrogate_errors(models, monkeypatch, capsys, tmp_path, extra, message):
    extra = [a.format(d=models) for a in extra]
    code, _, err = run(
        monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data", "digits", "--eps", "0.1",
        "--n", "20", *extra, "--out", tmp_path / "e.json", "--db", tmp_path / "runs.sqlite",
    )  # fmt: skip
    assert code == 2
    assert message in " ".join(err.split())

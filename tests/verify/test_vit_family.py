"""The VNN-COMP 2023 vit networks as a user would take them to `attack` and `certify`: the data are
the centres of the VNN-LIB boxes (label from each file's comment), the value range the boxes'
normalised range, eps their half-width (where the competition needed branch and bound) and an
eighth of it (where CROWN proves points). Every point that `certify` proves must survive the
attack."""

import gzip
import json
import re

import numpy as np
import pytest
import torch

from robustlab.attacks.apgd import APGD
from robustlab.attacks.evaluate import run_attack
from robustlab.bounds import certify
from robustlab.data import load_npz
from robustlab.model import load_model
from robustlab.threat import LpBall
from robustlab.verify.vnnlib import read_vnnlib

from ..conftest import SHARED, run_cli

FAMILY = SHARED / "benchmarks" / "vnncomp2023" / "vit"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FAMILY.is_dir(), reason="shared vnncomp2023/vit not present"),
]
N_POINTS = 3


def _boxes(net: str):
    rows = [r.split(",") for r in (FAMILY / "instances.csv").read_text().split()]
    files = [FAMILY / v for o, v, _ in rows if o.endswith(net)][:N_POINTS]
    lo, hi, labels = [], [], []
    for f in files:
        head = gzip.open(f, "rt").read(200)
        labels.append(int(re.search(r"label:\s*(\d+)", head).group(1)))
        spec = read_vnnlib(f)
        lo.append(spec.lower[0])
        hi.append(spec.upper[0])
    return torch.stack(lo), torch.stack(hi), torch.tensor(labels)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    onnx = FAMILY / "onnx" / "ibp_3_3_8.onnx.gz"
    lo, hi, y = _boxes("ibp_3_3_8.onnx.gz")
    half = (hi - lo) / 2
    eps = float(half.max())  # the boxes' half-width (smaller only where the range clips them)
    x = ((lo + hi) / 2).reshape(len(y), 3, 32, 32).numpy()
    path = tmp_path_factory.mktemp("vit") / "vit.npz"
    np.savez(path, x=x, y=y.numpy(), lower=float(lo.min()), upper=float(hi.max()))
    return onnx, path, eps


@pytest.mark.parametrize("share", [1.0, 0.125])
def test_certified_points_survive_the_attack(case, share):
    onnx, path, eps = case
    model = load_model(onnx).module
    data = load_npz(path)
    threat = LpBall("inf", eps * share, lower=data.lower, upper=data.upper)
    cert = certify(model, data, threat, "crown")
    attacked = run_attack(model, data, threat, APGD(n_iter=50, restarts=1))
    assert cert.clean_accuracy > 0
    for c, r in zip(cert.certified, attacked.robust, strict=True):
        assert r or not c  # certified => not broken
    assert cert.certified_accuracy <= attacked.robust_accuracy
    if share < 1:
        assert cert.certified_accuracy > 0  # the check above is not vacuous


def test_attack_and_certify_commands_run_on_the_vit(monkeypatch, capsys, tmp_path, case):
    onnx, path, eps = case
    common = ["--model", onnx, "--data", path, "--eps", f"{eps / 8:.6g}", "--n", "1"]
    code, out, err = run_cli(
        monkeypatch, capsys, "certify", *common, "--method", "crown", "--out", tmp_path / "c.json"
    )
    assert code == 0, err
    code, out, err = run_cli(
        monkeypatch, capsys, "attack", *common, "--suite", "fast", "--out", tmp_path / "a.json"
    )
    assert code == 0, err
    cert = json.loads((tmp_path / "c.json").read_text())
    att = json.loads((tmp_path / "a.json").read_text())
    assert cert["certified_accuracy"] <= att["robust_accuracy"] + 1e-12

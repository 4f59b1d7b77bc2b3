"""Preprocessing as a layer: load_model(..., mean=, std=) and the CLI's --mean / --std."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.errors import RobustlabError
from robustlab.model import ModelSource, load_model, normalized, parse_floats
from robustlab.threat import LpBall

from ..conftest import SHARED
from ..conftest import run_cli as run

OVAL = SHARED / "benchmarks" / "oval21" / "nets" / "cifar_base_kw.onnx"
CIFAR = SHARED / "datasets" / "cifar10_test_100.csv"
OVAL_MEAN, OVAL_STD = "0.485,0.456,0.406", "0.225,0.225,0.225"  # the oval21 nets' normalisation


def test_images_normalise_per_channel() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    model, pre = normalized(conv, (3, 5, 5), [0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    x = torch.rand(4, 3, 5, 5)
    mean = torch.tensor([0.1, 0.2, 0.3]).reshape(3, 1, 1)
    std = torch.tensor([0.5, 0.25, 2.0]).reshape(3, 1, 1)
    assert torch.equal(model(x), conv((x - mean) / std))
    assert pre == {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}


def test_flat_vectors_normalise_the_last_dim_and_a_scalar_all() -> None:
    mlp = nn.Linear(4, 2)
    model, _ = normalized(mlp, (4,), [1.0, 2.0, 3.0, 4.0], 2.0)
    x = torch.rand(3, 4)
    assert torch.equal(model(x), mlp((x - torch.tensor([1.0, 2.0, 3.0, 4.0])) / 2.0))
    assert normalized(mlp, (4,), None, None) == (mlp, None)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.1, 0.2], 1.0, r"mean has 2 values; expected 1 or 3 \(the input has 3 channels"),
        (0.0, [1.0, 1.0, 1.0, 1.0], "std has 4 values; expected 1 or 3"),
        (0.0, [1.0, 0.0, 1.0], "std must be positive"),
        ([float("nan")], 1.0, "mean must be finite"),
    ],
)
def test_bad_values_name_what_is_expected(mean, std, match) -> None:
    with pytest.raises(RobustlabError, match=match):
        normalized(nn.Conv2d(3, 1, 1), (3, 4, 4), mean, std)


def test_parse_floats() -> None:
    assert parse_floats("0.5, 1,2e-1", "--mean") == (0.5, 1.0, 0.2)
    assert parse_floats(None, "--mean") is None
    with pytest.raises(RobustlabError, match="--std expects numbers separated by commas"):
        parse_floats("0.2,x", "--std")


def test_load_model_records_preprocessing_and_bounds_stay_in_pixel_space() -> None:
    plain = load_model("zoo:mlp")
    loaded = load_model(ModelSource("zoo:mlp", (0.5,), (0.25,)))
    assert loaded.to_dict()["preprocessing"] == {"mean": [0.5], "std": [0.25]}
    x = torch.rand(5, *loaded.input_shape)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), plain.module((x - 0.5) / 0.25))
    b = compute_bounds(loaded.module, (LpBall("inf", 0.01), x), "crown")
    with torch.no_grad():
        for _ in range(20):
            xs = (x + 0.01 * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
            y = loaded.module(xs).double()
            assert (b.lower <= y + 1e-9).all() and (y <= b.upper + 1e-9).all()


@pytest.mark.skipif(not (OVAL.is_file() and CIFAR.is_file()), reason="shared files are missing")
def test_cli_attack_with_the_networks_normalisation(monkeypatch, capsys, tmp_path) -> None:
    def clean(*extra: str) -> float:
        out = tmp_path / "a.json"
        code, _, err = run(
            monkeypatch, capsys, "attack", "--model", OVAL, "--data", CIFAR, "--eps", "0.001",
            "--attacks", "fgsm", "--out", out, "--db", tmp_path / "db.sqlite", *extra,
        )  # fmt: skip
        assert code == 0, err
        return json.loads(out.read_text())

    report = clean("--mean", OVAL_MEAN, "--std", OVAL_STD)
    assert report["clean_accuracy"] >= 0.6  # 0.73 on these 100 images
    assert report["model"]["preprocessing"]["std"] == [0.225, 0.225, 0.225]
    assert clean()["clean_accuracy"] <= 0.2  # 0.08: the network sees unnormalised pixels
    code, _, err = run(
        monkeypatch, capsys, "attack", "--model", OVAL, "--data", CIFAR, "--eps", "0.01",
        "--mean", "0.4,0.5", "--out", tmp_path / "b.json", "--db", tmp_path / "db.sqlite",
    )  # fmt: skip
    assert code == 2 and "mean has 2 values; expected 1 or 3" in err
    assert len(err.strip().splitlines()) == 1

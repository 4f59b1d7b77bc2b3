"""Corruption metrics: CE / mCE by hand, accuracy falling with severity on the zoo CNN, the same
model as baseline, tabular inputs, and bad input."""

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.corruptions.evaluate import ce_metrics, evaluate_corruptions
from robustlab.corruptions.tabular import TABULAR, corrupt_tabular
from robustlab.data import Dataset, load_digits_split
from robustlab.errors import RobustlabError


@pytest.fixture(scope="module")
def cnn():
    return zoo.pretrained("cnn")


@pytest.fixture(scope="module")
def digits120():
    return load_digits_split(train=False).subset(120)


def test_ce_by_hand():
    errors = {"a": [0.2, 0.4], "b": [0.5, 0.5]}
    base = {"a": [0.4, 0.4], "b": [0.25, 0.75]}
    out = ce_metrics(errors, base, 0.1, 0.2)
    assert out["a"][0] == pytest.approx(0.6 / 0.8)
    assert out["a"][1] == pytest.approx((0.1 + 0.3) / (0.2 + 0.2))
    assert out["b"][0] == pytest.approx(1.0)
    assert out["b"][1] == pytest.approx(0.8 / 0.6)
    assert ce_metrics(errors, None, 0.1, None)["a"] == (None, None)


def test_accuracy_falls_with_severity_on_the_zoo_cnn(cnn, digits120):
    r = evaluate_corruptions(cnn, digits120, "common", "1-5", seed=0)
    mean = [
        sum(row["accuracy"] for row in r.table if row["severity"] == s) / 15 for s in range(1, 6)
    ]
    assert all(b < a for a, b in zip(mean, mean[1:], strict=False)), mean
    assert mean[0] <= r.clean_accuracy
    assert r.mean_corruption_accuracy == pytest.approx(sum(mean) / 5)
    assert r.mean_corruption_error == pytest.approx(1 - r.mean_corruption_accuracy)
    assert r.mce is None and r.forward_passes == 120 * (1 + 15 * 5)
    d = r.to_dict()
    assert {"corruption", "severity", "accuracy"} == set(d["table"][0])
    again = evaluate_corruptions(cnn, digits120, "common", "1-5", seed=0, batch_size=50)
    assert len(again.table) == 75


def test_same_model_as_baseline_gives_mce_one(cnn, digits120):
    r = evaluate_corruptions(cnn, digits120, "gaussian_noise,fog", "1,5", baseline=cnn)
    assert r.mce == pytest.approx(1.0) and r.relative_mce == pytest.approx(1.0)
    assert r.baseline["clean_accuracy"] == r.clean_accuracy
    assert r.forward_passes == 2 * 120 * (1 + 2 * 2)


def test_tabular_noise():
    x = torch.randn(4000, 6) * torch.tensor([1.0, 2, 3, 4, 5, 6])
    scale = x.std(0)
    for s, c in enumerate(TABULAR["gaussian"], 1):
        d = corrupt_tabular(x, "gaussian", s, seed=0) - x
        assert torch.allclose(d.std(0) / scale, torch.full((6,), c), rtol=0.08)
        u = corrupt_tabular(x, "uniform", s, seed=0) - x
        assert torch.allclose(u.std(0) / scale, torch.full((6,), c), rtol=0.08)
        assert u.abs().max() <= c * 3**0.5 * scale.max() + 1e-5
    drop = corrupt_tabular(x, "dropout", 5, seed=0)
    frac = float((drop != x).float().mean())
    assert abs(frac - 0.5) < 0.03
    assert torch.equal(drop, corrupt_tabular(x, "dropout", 5, seed=0))
    clipped = corrupt_tabular(x, "gaussian", 5, lower=-1.0, upper=1.0)
    assert clipped.min() >= -1 and clipped.max() <= 1
    with pytest.raises(RobustlabError, match=r"shape \(N, F\); found \(2, 3, 4\)"):
        corrupt_tabular(torch.zeros(2, 3, 4), "gaussian")
    with pytest.raises(RobustlabError, match="unknown tabular corruption 'salt'"):
        corrupt_tabular(x, "salt")


def test_tabular_dataset_through_evaluate(digits120):
    flat = Dataset("flat", digits120.x.reshape(120, 64), digits120.y)
    mlp = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), zoo.pretrained("mlp"))
    r = evaluate_corruptions(mlp, flat, "all", "1,5")
    assert [p["corruption"] for p in r.per_corruption] == ["gaussian", "uniform", "dropout"]
    assert all(p["family"] == "tabular" for p in r.per_corruption)
    acc = {(row["corruption"], row["severity"]): row["accuracy"] for row in r.table}
    assert acc[("dropout", 5)] < acc[("dropout", 1)]
    with pytest.raises(RobustlabError, match="unknown tabular corruption 'fog'"):
        evaluate_corruptions(mlp, flat, "fog")


def test_bad_input(cnn, digits120):
    with pytest.raises(RobustlabError, match="severities must be integers in 1..5"):
        evaluate_corruptions(cnn, digits120, "fog", "0-3")
    with pytest.raises(RobustlabError, match="severities must look like 1-5"):
        evaluate_corruptions(cnn, digits120, "fog", "a")
    with pytest.raises(RobustlabError, match="unknown corruption 'rain'"):
        evaluate_corruptions(cnn, digits120, "fog,rain")

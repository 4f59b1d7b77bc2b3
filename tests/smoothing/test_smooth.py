"""Sampling, PREDICT / CERTIFY on models with known answers, certified accuracy against radius, and
the ``robustlab smooth`` command."""

import json
import math

import pytest
import torch
from scipy import stats
from torch import nn

from robustlab.data import Dataset
from robustlab.smoothing import ABSTAIN, certify, predict, sample_counts, smooth

from ..conftest import run_cli as run


class Halfplane(nn.Module):
    """Class 1 where w . x > b, else class 0: the smoothed classifier is known in closed form."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        s = x.flatten(1) @ self.w - self.b
        return torch.stack([-s, s], 1)


def _halfplane():
    w = torch.zeros(64)
    w[:4] = torch.tensor([1.0, -2.0, 0.5, 2.0])
    return Halfplane(w, 0.3)


def test_counts_sum_and_batching():
    model = _halfplane()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for batch in (7, 64, 1000):
        c = sample_counts(model, x, 0.5, 300, 2, batch_size=batch,
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
        assert c.shape == (5, 2) and (c.sum(1) == 300).all()
    a = sample_counts(model, x, 0.5, 300, 2, generator=torch.Generator().manual_seed(3))
    b = sample_counts(model, x, 0.5, 300, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_radius_never_exceeds_the_true_smoothed_radius():
    # for a half-plane the smoothed classifier's exact radius is the distance to the boundary
    model = _halfplane()
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = 0.5
    classes, radii = certify(model, x, sigma, 100, 5000, 0.001,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    s = (x.flatten(1) @ model.w - model.b).double()
    distance = s.abs() / model.w.norm()
    true_class = (s > 0).long()
    ok = classes != ABSTAIN
    assert ok.sum() >= 20
    assert (classes[ok] == true_class[ok]).all()
    assert (radii[ok] <= distance[ok] + 1e-9).all()
    # and not far below it: p_A = Phi(distance / sigma) is estimated from 5000 samples
    assert (radii[ok] >= distance[ok] - 0.15).all()


def test_predict_abstains_on_the_boundary():
    model = _halfplane()
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, :4] = torch.tensor([0.3, 0.0, 0.0, 0.0])  # w . x = b exactly
    far = torch.zeros(1, 1, 8, 8)
    far[0, 0, 0, 3] = 1.0  # w . x - b = 1.7
    out = predict(model, torch.cat([x, far]), 0.25, 2000, 0.001,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert out.tolist() == [ABSTAIN, 1]


@pytest.mark.parametrize("sigma", [0.12, 0.5, 1.0])
def test_certified_at_zero_never_exceeds_clean(mlp, digits, sigma):
    data = digits.subset(60)
    r = smooth(mlp, data, sigma, n0=20, n=200, alpha=0.001, batch_size=512)
    assert r.curve[0]["radius"] == 0
    assert r.curve[0]["certified_accuracy"] <= r.clean_accuracy
    accs = [p["certified_accuracy"] for p in r.curve]
    assert accs == sorted(accs, reverse=True)
    assert r.n_forward == 60 * 220
    for s in r.samples:
        assert s["radius"] is None or (s["prediction"] != ABSTAIN and s["radius"] >= 0)
        assert 0 <= s["count_top"] <= 200


def test_smoothed_constant_classifier_gets_the_largest_radius():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    data = Dataset("c", torch.rand(3, 1, 8, 8), torch.tensor([1, 1, 0]))
    r = smooth(model, data, 0.25, n0=10, n=1000, alpha=0.01)
    top = 0.25 * stats.norm.ppf(0.01 ** (1 / 1000))
    assert [s["radius"] for s in r.samples[:2]] == pytest.approx([top, top])
    assert r.clean_accuracy == pytest.approx(2 / 3) and r.abstain_rate == 0


def test_cli_smooth(tmp_path, monkeypatch, capsys):
    code, out, err = run(
        monkeypatch, capsys, "smooth", "--model", "zoo:mlp", "--data", "digits",
        "--sigma", "0.25", "--n0", "20", "--samples", "200", "--alpha", "0.001",
        "--n", "10", "--out", tmp_path / "r.json", "--db", tmp_path / "db.sqlite",
    )  # fmt: skip
    assert code == 0, err
    assert "deprecated" not in err
    r = json.loads((tmp_path / "r.json").read_text())
    keys = {"sigma", "n", "samples", "alpha", "clean_accuracy", "abstain_rate", "curve"}
    assert keys | {"per_input"} <= r.keys() and r["schema_version"] == 2
    assert (r["sigma"], r["n"], r["samples"], r["alpha"]) == (0.25, 10, 200, 0.001)
    assert all(p.keys() == {"radius", "certified_accuracy"} for p in r["curve"])
    assert len(r["per_input"]) == 10
    assert all(s.keys() == {"label", "prediction", "count_top", "radius"} for s in r["per_input"])
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    assert not math.isnan(r["clean_accuracy"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sigma", "0"], "sigma"),
        (["--alpha", "1.5"], "alpha"),
        (["--samples", "0"], "n0"),
        (["--examples", "3"], "found both --n 2 and --examples 3"),
    ],  # fmt: skip
)
def test_cli_smooth_bad_input(args, message, tmp_path, monkeypatch, capsys):
    base = {"--model": "zoo:mlp", "--data": "digits", "--sigma": "0.25", "--n": "2"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [v for kv in base.items() for v in kv]
    code, _, err = run(monkeypatch, capsys, "smooth", *flat, "--out", tmp_path / "x.json")
    assert code == 2 and message in err


def test_cli_smooth_n_counts_examples_and_examples_is_a_deprecated_alias(
    tmp_path, monkeypatch, capsys
):
    common = ["smooth", "--model", "zoo:mlp", "--data", "digits", "--sigma", "0.25", "--n0", "8",
              "--samples", "16", "--db", tmp_path / "db.sqlite"]  # fmt: skip
    code, _, err = run(monkeypatch, capsys, *common, "--n", "5", "--out", tmp_path / "a.json")
    r = json.loads((tmp_path / "a.json").read_text())
    assert code == 0 and len(r["per_input"]) == 5 and r["n"] == 5 and r["samples"] == 16, err
    code, _, err = run(
        monkeypatch, capsys, *common, "--examples", "3", "--out", tmp_path / "b.json"
    )
    assert code == 0 and json.loads((tmp_path / "b.json").read_text())["n"] == 3
    assert "note: --examples is deprecated; use --n" in err

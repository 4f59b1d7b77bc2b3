"""Proof features (ProFIt): the neurons a certificate rests on."""

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.errors import RobustlabError
from robustlab.explain.proof_features import proof_features


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_removing_breaks_keeping_preserves(arch, digits):
    """Issue 21: for certified points, keeping only the proof features keeps the certificate and
    projecting them out breaks it."""
    model = zoo.pretrained(arch)
    seen = 0
    for i in range(20):
        r = proof_features(model, digits.x[i], int(digits.y[i]), 0.01)
        if not r.certified or not r.features:
            continue
        seen += 1
        assert r.preserved and r.broken
        assert len(set(r.features)) == len(r.features) < r.n_neurons
        assert (r.lower <= r.upper).all()
        assert r.pictures.shape == (len(r.features), *digits.x.shape[1:])
        d = r.to_dict()
        assert d["kept_bound"] > 0 >= d["removed_bound"]
    assert seen >= 10


def test_the_layer_certificate_is_a_sound_bound(mlp, digits):
    """The layer's certificate beta + sum of terms is a lower bound of every margin in the ball."""
    x, y, eps = digits.x[3], int(digits.y[3]), 0.02
    r = proof_features(mlp, x, y, eps)
    gen = torch.Generator().manual_seed(0)
    pts = (x + eps * (2 * torch.rand(500, *x.shape, generator=gen) - 1)).clamp(0, 1)
    with torch.no_grad():
        out = mlp(pts).double()
    margins = out[:, y : y + 1] - torch.cat([out[:, :y], out[:, y + 1 :]], 1)
    assert (r.bound[None] <= margins + 1e-9).all()


def test_bad_input(mlp, digits):
    with pytest.raises(RobustlabError, match=r"label must lie in \[0, 9\]"):
        proof_features(mlp, digits.x[0], 12, 0.01)
    with pytest.raises(RobustlabError, match="no single layer 'nope'"):
        proof_features(mlp, digits.x[0], 0, 0.01, layer="nope")
    head = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(),
                         nn.Linear(8, 10))  # fmt: skip
    with pytest.raises(RobustlabError, match="affine head"):
        proof_features(head, digits.x[0], 0, 0.01)
    with pytest.raises(RobustlabError, match="a ReLU layer"):
        proof_features(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), digits.x[0], 0, 0.01)


def test_certify_explain_proofs(monkeypatch, capsys, tmp_path):
    import json

    from ..conftest import run_cli

    out = tmp_path / "c.json"
    code, stdout, _ = run_cli(monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data",
                              "digits", "--eps", "0.01", "--n", "20", "--explain-proofs", "2",
                              "--out", out)  # fmt: skip
    assert code == 0, stdout
    points = json.loads(out.read_text())["proof_features"]["points"]
    assert len(points) == 2 and all(p["certified"] and p["preserved"] for p in points)
    assert stdout.count("proof features") == 2
    assert "Proof features" in (tmp_path / "c.html").read_text()
    code, stdout, _ = run_cli(monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data",
                              "digits", "--eps", "0.01", "--n", "5", "--out", out)  # fmt: skip
    assert code == 0 and "proof features" not in stdout
    assert "Proof features" not in (tmp_path / "c.html").read_text()

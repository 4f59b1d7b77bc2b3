"""The availability attack on randomized smoothing: abstention under attack at least the clean
one, the smoothed gap it minimises, the ``smooth --availability`` command."""

import json

import pytest
import torch

from robustlab import store
from robustlab.errors import RobustlabError
from robustlab.smoothing.availability import availability, gap_attack, noisy_gap
from robustlab.threat import LpBall

from ..conftest import run_cli as run


def test_noisy_gap_is_a_probability_gap_with_gradients(mlp, digits):
    x = digits.x[:5].clone().requires_grad_(True)
    g = noisy_gap(mlp, x, 0.25, 8, torch.Generator().manual_seed(0))
    assert g.shape == (5,) and bool(((g >= 0) & (g <= 1)).all())
    (grad,) = torch.autograd.grad(g.sum(), x)
    assert grad.abs().sum() > 0


def test_gap_attack_stays_in_the_ball_and_shrinks_the_gap(mlp, digits):
    x = digits.x[:16]
    threat = LpBall("2", 0.5, digits.lower, digits.upper)
    adv = gap_attack(mlp, x, threat, 0.25, steps=20)
    assert float((adv - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    assert bool(((adv >= digits.lower) & (adv <= digits.upper)).all())
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        before, after = noisy_gap(mlp, x, 0.25, 64, gen), noisy_gap(mlp, adv, 0.25, 64, gen)
    assert float(after.mean()) < float(before.mean())


def test_abstention_under_attack_is_at_least_the_clean_one(mlp, digits):
    r = availability(mlp, digits.subset(32), 0.25, 0.5, "2", n0=50, n=300, steps=20)
    assert r.attacked["abstain_rate"] >= r.clean["abstain_rate"]
    assert r.attacked["uncertified_rate"] >= r.clean["uncertified_rate"]
    assert r.attacked["uncertified_rate"] > 0  # the attack does something on this model
    names = {m.name for m in r.metrics()}
    assert "availability attacked abstain_rate@0.5" in names and r.to_dict()["examples"] == 32


@pytest.mark.parametrize(("kw", "needle"), [({"eps": -1.0}, "eps"), ({"norm": "1"}, "norm")])
def test_availability_rejects_bad_arguments(mlp, digits, kw, needle):
    args = {"eps": 0.5, "norm": "2", **kw}
    with pytest.raises(RobustlabError, match=needle):
        availability(mlp, digits.subset(4), 0.25, args["eps"], args["norm"], n=10)


def test_smooth_command_reports_availability(monkeypatch, capsys, tmp_path):
    out, db = tmp_path / "s.json", tmp_path / "runs.sqlite"
    code, stdout, err = run(monkeypatch, capsys, "smooth", "--model", "zoo:mlp", "--data",
                            "digits", "--sigma", "0.25", "--samples", "200", "--n0", "20",
                            "--n", "12", "--availability", "0.5", "--out", out,
                            "--db", db)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    av = r["availability"]
    assert av["attacked"]["abstain_rate"] >= av["clean"]["abstain_rate"]
    assert "Availability: abstention under attack" in out.with_suffix(".html").read_text()
    (rec,) = store.list_runs(db, 5)
    assert "availability attacked uncertified_rate@0.5" in rec.metrics
    assert "availability attack" in stdout


def test_smooth_availability_bad_input_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "smooth", "--model", "zoo:mlp", "--data", "digits",
                       "--sigma", "0.25", "--samples", "20", "--n", "4", "--availability",
                       "-1", "--out", tmp_path / "s.json")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "eps" in err

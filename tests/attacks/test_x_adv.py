"""Attacks return their adversarial examples: run_attack's x_adv, the suite's worst case per eps
and per attack, and ``robustlab attack --save-examples``."""

import numpy as np
import torch

import robustlab as rl
from robustlab.attacks import evaluate, predict, robustness_curve
from tests.conftest import run_cli


def _setup():
    model = rl.load_model("zoo:mlp")
    return model, rl.load_data("digits").subset(80).matched_to(model.input_shape)


def test_run_attack_returns_x_adv_inside_the_threat_model():
    model, data = _setup()
    threat = rl.LpBall("inf", 0.1)
    res = rl.run_attack(model, data, threat, rl.PGD(steps=10))
    assert res.x_adv.shape == data.x.shape and res.x_adv.dtype == data.x.dtype
    assert threat.contains(data.x, res.x_adv).all()
    broken = ~torch.tensor(res.robust) & (predict(model.module, data.x) == data.y)
    assert broken.any()
    assert (predict(model.module, res.x_adv)[broken] != data.y[broken]).all()
    assert torch.equal(res.x_adv[~broken], data.x[~broken])  # clean where nothing was found
    assert "x_adv" not in res.to_dict()


def test_robustness_curve_keeps_examples_found_at_a_smaller_eps():
    model, data = _setup()
    small, large = robustness_curve(model, data, [0.05, 0.1], "inf", rl.PGD(steps=10))
    kept = ~torch.tensor(small.robust) & (predict(model.module, data.x) == data.y)
    assert torch.equal(large.x_adv[kept], small.x_adv[kept])
    assert rl.LpBall("inf", 0.1).contains(data.x, large.x_adv).all()


def test_suite_returns_worst_case_and_per_attack_examples():
    model, data = _setup()
    eps = [0.1, 0.05]
    r = evaluate(model, data, eps, "inf", attacks=["fgsm", "pgd"], checks=False)
    assert len(r.x_adv) == len(r.broken_by) == 2
    for e, xa, by, robust in zip(eps, r.x_adv, r.broken_by, r.robust, strict=True):
        assert rl.LpBall("inf", e).contains(data.x, xa).all()
        broken = torch.tensor([b != "" for b in by])
        assert torch.equal(
            broken, ~torch.tensor(robust) & (predict(model.module, data.x) == data.y)
        )
        assert (predict(model.module, xa)[broken] != data.y[broken]).all()
    for ex in r.examples:
        assert ex.x_adv.shape == (len(ex.index), *data.x.shape[1:])
        assert (predict(model.module, ex.x_adv) != data.y[ex.index]).all()
        assert r.examples_of(ex.attack, ex.eps) is ex
    assert r.examples_of("pgd", 0.5) is None


def test_cli_save_examples(monkeypatch, capsys, tmp_path):
    f = tmp_path / "missing" / "adv.npz"  # a missing folder is created
    code, out, err = run_cli(
        monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data", "digits", "--eps",
        "8/255,0.1", "--n", "40", "--attacks", "fgsm,pgd", "--out", tmp_path / "a.json",
        "--db", tmp_path / "runs.sqlite", "--save-examples", f,
    )  # fmt: skip
    assert code == 0, err
    with np.load(f, allow_pickle=False) as z:
        x, xa, eps, broken = z["x"], z["x_adv"], z["eps"], z["broken"]
        assert xa.shape == (2, *x.shape) and np.allclose(eps, [8 / 255, 0.1])
        assert z["attack"].shape == broken.shape == z["prediction"].shape == (2, 40)
        assert (
            broken[1].sum() > 0
            and (z["prediction"][broken] != np.broadcast_to(z["y"], broken.shape)[broken]).all()
        )
        for k in range(2):
            assert np.abs(xa[k] - x).max() <= eps[k] * (1 + 1e-6) + 1e-6


def test_steps_is_the_iteration_name_everywhere():
    from robustlab.attacks import APGD, APGDT, FAB

    assert APGD(steps=7) == APGD(n_iter=7) and APGDT(steps=3).n_iter == 3
    assert FAB(steps=4).n_iter == 4 and rl.PGD(steps=5).steps == 5

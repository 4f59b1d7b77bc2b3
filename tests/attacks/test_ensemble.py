"""The ensemble runner: per-sample worst case, reuse across eps, re-checks, JSON keys."""

import json
from dataclasses import dataclass

import pytest
import torch

from robustlab.attacks import APGD, PGD, evaluate, run_attack, suite_attacks
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall


def test_json_keys_and_curve(mlp, digits):
    res = evaluate(mlp, digits.subset(80), [0.1, 0.05, 0.0], "inf", suite="fast")
    out = json.loads(json.dumps(res.to_dict()))
    assert {"clean_accuracy", "robust_accuracy", "curve", "per_attack", "flags"} <= set(out)
    assert [c["eps"] for c in out["curve"]] == [0.1, 0.05, 0.0]  # the order given
    assert out["robust_accuracy"] == out["curve"][0]["robust_accuracy"]
    assert out["curve"][2]["robust_accuracy"] == out["clean_accuracy"]
    assert out["curve"][0]["robust_accuracy"] <= out["curve"][1]["robust_accuracy"]
    rec = out["per_attack"][0]
    assert {"attack", "eps", "n_attacked", "n_broken", "n_forward", "n_backward", "seconds"} <= set(
        rec
    )
    assert rec["attack"] == "apgd-ce" and rec["n_backward"] > 0


def test_points_broken_at_a_small_eps_are_not_attacked_again(mlp, digits):
    res = evaluate(
        mlp, digits.subset(100), [0.05, 0.1], "inf", suite="fast", checks=False,
        skip_certified=False,
    )  # fmt: skip
    small = [r for r in res.per_attack if r["eps"] == 0.05]
    first_large = next(r for r in res.per_attack if r["eps"] == 0.1)
    assert first_large["n_attacked"] == round(res.curve[0]["robust_accuracy"] * 100)
    assert small[0]["n_attacked"] == round(res.clean_accuracy * 100)
    robust = torch.tensor(res.robust)
    assert not (robust[1] & ~robust[0]).any()  # robust at 0.1 implies robust at 0.05


def test_per_sample_worst_case_is_at_least_as_strong_as_each_attack(mlp, digits):
    data = digits.subset(120)
    res = evaluate(mlp, data, [0.08], "inf", suite="standard", checks=False)
    ens = torch.tensor(res.robust[0])
    for name, attack in suite_attacks("standard", 10):
        alone = torch.tensor(run_attack(mlp, data, LpBall("inf", 0.08), attack).robust)
        assert not (ens & ~alone).any(), name
    assert [r["attack"] for r in res.per_attack] == ["apgd-ce", "apgd-t", "fab-t", "square"]


@dataclass(frozen=True)
class _Cheat:
    """Returns points far outside the threat model."""

    name = "cheat"

    def __call__(self, model, x, y, threat):
        return torch.zeros_like(x) + 0.5


def test_candidates_outside_the_threat_model_are_rejected_and_flagged(mlp, digits, monkeypatch):
    import robustlab.attacks.ensemble as ens

    monkeypatch.setattr(ens, "suite_attacks", lambda *a, **k: [("cheat", _Cheat())])
    res = evaluate(mlp, digits.subset(30), [0.01], "inf", checks=False, skip_certified=False)
    assert res.robust_accuracy == res.clean_accuracy
    assert res.flags[0]["name"] == "left_threat_model"
    with pytest.raises(RuntimeError, match="left the threat model"):
        run_attack(mlp, digits.subset(30), LpBall("inf", 0.01), _Cheat())


def test_named_attacks_use_the_suite_budget(mlp, digits):
    fast = dict(suite_attacks("fast", 10, names=["apgd-ce", "pgd"]))
    assert isinstance(fast["apgd-ce"], APGD) and isinstance(fast["pgd"], PGD)
    res = evaluate(mlp, digits.subset(40), [0.1], "2", attacks=["pgd", "fgsm"], checks=False)
    assert res.suite == "custom" and res.attacks == ["pgd", "fgsm"]
    assert res.norm == "2"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"suite": "huge"}, "unknown suite"),
        ({"attacks": ["nope"]}, "unknown attack"),
        ({"eps": []}, "eps must be"),
        ({"eps": [-1.0]}, "eps must be"),
        ({"norm": "1"}, "norm must be"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_names_what_was_expected(mlp, digits, kwargs, match):
    args = {"eps": [0.1], "norm": "inf", **kwargs}
    with pytest.raises(RobustlabError, match=match):
        evaluate(mlp, digits.subset(10), **args)


def test_transfer_attack_does_not_query_the_target_for_gradients(mlp, digits):
    from robustlab import zoo

    surrogate = zoo.train_digits("mlp", seed=1, epochs=5)
    surrogate.zero_grad(set_to_none=True)
    res = evaluate(
        mlp,
        digits.subset(60),
        [0.1],
        "inf",
        attacks=["transfer"],
        surrogate=surrogate,
        checks=False,
    )
    rec = res.per_attack[0]
    assert rec["attack"] == "transfer" and rec["n_backward"] == 0 and rec["n_broken"] > 0
    assert all(p.grad is None and p.requires_grad for p in surrogate.parameters())
    with pytest.raises(RobustlabError, match="surrogate"):
        evaluate(mlp, digits.subset(10), [0.1], "inf", attacks=["transfer"], checks=False)


def test_evaluate_restores_training_mode(digits):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model.train()
    evaluate(model, digits.subset(10), [0.1], "inf", suite="fast")
    assert model.training

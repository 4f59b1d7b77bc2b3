"""Reliability flags: gradient masking, randomness, Square beating the white-box attacks."""

import torch

from robustlab.attacks import evaluate
from robustlab.attacks.flags import check_curve, check_reattack, check_square
from tests.attacks.nets import Noisy, Quantised


def _names(res):
    return {f["name"] for f in res.to_dict()["flags"]}


def test_a_clean_model_gets_no_flags(mlp, digits):
    res = evaluate(mlp, digits.subset(100), [0.05, 0.1, 0.3], "inf", suite="fast")
    assert res.flags == []


def test_gradient_masking_by_quantisation_is_flagged(mlp, digits):
    masked = Quantised(mlp, levels=4).eval()
    res = evaluate(
        masked, digits.subset(60), [0.1], "inf", attacks=["apgd-ce", "square"], suite="standard"
    )
    names = _names(res)
    assert "zero_gradients" in names
    assert "large_eps_not_zero" in names  # APGD cannot move without gradients
    assert "square_stronger" in names  # the black-box attack breaks what APGD could not
    zero = next(f for f in res.flags if f["name"] == "zero_gradients")
    assert zero["value"] == 1.0


def test_a_randomized_model_is_flagged(mlp, digits):
    torch.manual_seed(0)
    res = evaluate(Noisy(mlp), digits.subset(40), [0.05], "inf", suite="fast")
    assert "randomized_model" in _names(res)


def test_square_flag_needs_a_white_box_attack_before_it():
    recs = [
        {"attack": "apgd-ce", "eps": 0.1, "n_attacked": 50, "n_broken": 10},
        {"attack": "square", "eps": 0.1, "n_attacked": 40, "n_broken": 3},
    ]
    assert check_square(recs, 100, {"apgd-ce"}).name == "square_stronger"
    assert check_square(recs[1:], 100, {"apgd-ce"}) is None
    assert check_square([recs[0], {**recs[1], "n_broken": 0}], 100, {"apgd-ce"}) is None


def test_curve_and_reattack_checks():
    flat = [{"eps": 0.01, "robust_accuracy": 0.5}, {"eps": 0.1, "robust_accuracy": 0.5}]
    assert check_curve(flat, clean=0.9).name == "accuracy_not_decreasing"
    assert check_curve(flat, clean=0.5) is None  # nothing broken at all: no evidence
    falling = [{"eps": 0.01, "robust_accuracy": 0.5}, {"eps": 0.1, "robust_accuracy": 0.2}]
    assert check_curve(falling, clean=0.9) is None
    assert check_reattack(5, 16, "apgd-ce", 0.1, 0.2).name == "accuracy_not_decreasing"
    assert check_reattack(1, 16, "apgd-ce", 0.1, 0.2) is None


def _with_mode_layers():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(32, 10),
    )


def test_training_mode_is_flagged_evaluated_in_eval_mode_and_restored(digits):
    """fra31/auto-attack issue 74: dropout / batch norm left in training mode."""
    data = digits.subset(60)
    model = _with_mode_layers()
    model.eval()
    ref = evaluate(model, data, [0.05], "inf", suite="fast", checks=False)
    assert "training_mode" not in _names(ref)
    stats = model[2].running_mean.clone()
    model.train()
    model[2].eval()  # a mixed state: batch norm in eval, dropout and the container in training
    res = evaluate(model, data, [0.05], "inf", suite="fast", checks=False)
    flag = next(f for f in res.flags if f["name"] == "training_mode")
    assert flag["value"] == 1.0 and "4" in flag["message"]  # the dropout layer's name
    assert res.robust == ref.robust and res.clean_accuracy == ref.clean_accuracy
    assert [m.training for m in model.modules()] == [True, True, True, False, True, True, True]
    assert torch.equal(model[2].running_mean, stats)  # no forward pass in training mode


def test_mode_dependent_layers_are_recognised_in_torchscript_too():
    from torch import nn

    from robustlab.attacks.base import training_mode_layers

    model = nn.Sequential(
        nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.Dropout(0.0),
        nn.InstanceNorm1d(4), nn.LayerNorm(4), nn.InstanceNorm1d(4, track_running_stats=True),
    ).train()  # fmt: skip
    assert training_mode_layers(model) == ["1", "2", "6"]  # p = 0 and no running stats: no
    assert training_mode_layers(torch.jit.script(model)) == ["1", "2", "6"]
    assert training_mode_layers(model.eval()) == []

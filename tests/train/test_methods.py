"""Every training method: one step gives a finite loss with gradients; adversaries stay in the
threat model; the training loop logs each epoch; fast-AT stops at catastrophic overfitting."""

import pytest
import torch

from robustlab import zoo
from robustlab.data import Dataset, load_digits_split
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall
from robustlab.train import METHODS, get_method, train
from robustlab.train import loop as loop_module
from robustlab.train.adversary import fgsm_random_start, pgd
from robustlab.train.methods import StepContext


@pytest.fixture(scope="module")
def small():
    d = load_digits_split(train=True)
    return Dataset("small", d.x[:96], d.y[:96])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_step(name, small):
    torch.manual_seed(0)
    model = zoo.build("mlp")
    ctx = StepContext(0.05, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(0), model)
    out = get_method(name).step(model, small.x[:16], small.y[:16], ctx)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert out.clean_correct.shape == (16,)


def test_adversaries_stay_in_the_ball_and_leave_no_gradients(small):
    torch.manual_seed(0)
    model = zoo.build("mlp")
    x, y = small.x[:32], small.y[:32]
    threat = LpBall("inf", 0.1)
    gen = torch.Generator().manual_seed(0)
    for xa in (pgd(model, x, y, threat, generator=gen), fgsm_random_start(model, x, y, threat)):
        assert threat.contains(x, xa).all()
        assert not xa.requires_grad
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    with torch.no_grad():
        loss_clean = torch.nn.functional.cross_entropy(model(x), y)
        loss_adv = torch.nn.functional.cross_entropy(model(pgd(model, x, y, threat)), y)
    assert loss_adv > loss_clean


def test_train_logs_every_epoch(small):
    torch.manual_seed(0)
    seen = []
    result = train(zoo.build("mlp"), small, "ibp", 0.05, epochs=4, eval_data=small,
                   on_epoch=seen.append)  # fmt: skip
    assert [e["epoch"] for e in result.log] == [1, 2, 3, 4] and seen == result.log
    assert result.log[0]["eps"] == 0 and result.log[-1]["eps"] == pytest.approx(0.05)
    for e in result.log:
        assert {"loss", "clean_accuracy", "robust_accuracy", "certified_accuracy"} <= e.keys()
    assert result.log[-1]["train_certified_accuracy"] is not None
    assert result.n_forward > 0 and result.n_bounded > 0 and result.seconds > 0


def test_catastrophic_overfitting_stops_and_restores(small, monkeypatch):
    real = loop_module.evaluate_epoch
    checks = iter([0.6, 0.7, 0.3, 0.9])  # on the training batch: collapse at epoch 3

    def fake(model, data, eps, seed=0):
        out = real(model, data, eps, seed)
        if data.name == "small" and len(data) == 96 and data is not small:
            out["robust_accuracy"] = next(checks)
        return out

    monkeypatch.setattr(loop_module, "evaluate_epoch", fake)
    kept = {}

    def on_epoch(entry):
        kept[entry["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    model = zoo.build("mlp")
    result = train(model, small, "fast-at", 0.1, epochs=4, eval_data=small, on_epoch=on_epoch)
    assert result.epochs == 3 and result.best_epoch == 2
    assert [f["name"] for f in result.flags] == ["catastrophic_overfitting"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, kept[2][k])


@pytest.mark.parametrize(
    "kwargs",
    [{"method": "nope"}, {"eps": -0.1}, {"epochs": 0}, {"init": "zeros"}, {"optimizer": "lbfgs"}],
)
def test_bad_arguments(kwargs, small):
    args = {"method": "standard", "eps": 0.1, **kwargs}
    with pytest.raises(RobustlabError):
        train(zoo.build("mlp"), small, args.pop("method"), args.pop("eps"), **args)


def test_sgd_step_schedule(small):
    torch.manual_seed(0)
    result = train(zoo.build("mlp"), small, "standard", 0.0, epochs=8, lr=0.1, optimizer="sgd")
    lrs = [e["lr"] for e in result.log]  # the rate after each epoch's step: / 10 at 4 and 6
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001])
    assert result.hyperparameters["optimizer"] == "sgd" and result.log[-1]["loss"] < 2.3
    with pytest.raises(RobustlabError, match="optimizer must be one of adam, sgd"):
        loop_module.make_optimizer("nope", zoo.build("mlp").parameters(), 0.1, 4)

"""The training loop's model selection: select="best" keeps the epoch with the best PGD accuracy
on held-out data (Rice et al. 2020), the same rule for every method; "last" is unchanged."""

import pytest
import torch

from robustlab import zoo
from robustlab.data import Dataset, load_digits_split
from robustlab.errors import RobustlabError
from robustlab.train import loop as loop_module
from robustlab.train import train
from robustlab.train.loop import hold_out


@pytest.fixture(scope="module")
def small():
    d = load_digits_split(train=True)
    return Dataset("small", d.x[:120], d.y[:120])


def test_hold_out_is_a_fixed_partition(small):
    tr, val = hold_out(small, 0.25, seed=3)
    assert (len(tr), len(val)) == (90, 30)
    rows = torch.cat([tr.x, val.x]).flatten(1)
    assert len(torch.unique(rows, dim=0)) == len(torch.unique(small.x.flatten(1), dim=0))
    again = hold_out(small, 0.25, seed=3)[1]
    assert torch.equal(again.x, val.x) and torch.equal(again.y, val.y)
    assert val.name == "small (held-out 25%)"
    for share in (0.0, 1.0):
        with pytest.raises(RobustlabError, match="held-out share"):
            hold_out(small, share)


def test_best_keeps_the_epoch_with_the_best_held_out_robust_accuracy(small, monkeypatch):
    tr, val = hold_out(small, 0.25)
    states, real = [], loop_module.evaluate_epoch
    # held-out robust accuracy per epoch, made up: epoch 3 is best, epoch 2 ties it on robust
    # accuracy with lower clean accuracy
    fake = iter([(0.5, 0.1), (0.6, 0.4), (0.7, 0.4), (0.9, 0.2)])

    def evaluate(model, data, eps, seed=0):
        if data is not val:
            return real(model, data, eps, seed)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        clean, robust = next(fake)
        return {"clean_accuracy": clean, "robust_accuracy": robust, "certified_accuracy": None}

    monkeypatch.setattr(loop_module, "evaluate_epoch", evaluate)
    torch.manual_seed(0)
    model = zoo.build("mlp")
    result = train(model, tr, "pgd-at", 0.1, epochs=4, select="best", val_data=val)
    assert result.best_epoch == 3 and result.epochs == 4
    assert all(torch.equal(v, states[2][k]) for k, v in model.state_dict().items())
    assert [e["val_robust_accuracy"] for e in result.log] == [0.1, 0.4, 0.4, 0.2]
    assert result.hyperparameters["select"] == "best"


def test_last_is_the_default_and_unchanged(small):
    tr, val = hold_out(small, 0.25)
    runs = []
    for kwargs in ({}, {"select": "last", "val_data": val}):
        torch.manual_seed(0)
        model = zoo.build("mlp")
        result = train(model, tr, "interpolated-at", 0.1, epochs=2, **kwargs)
        runs.append((model.state_dict(), result))
    (a, ra), (b, rb) = runs
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert ra.best_epoch == rb.best_epoch == 2 and "val_robust_accuracy" not in ra.log[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"select": "first"}, "select must be one of last, best; found 'first'"),
        ({"select": "best"}, "select 'best' chooses the epoch on held-out data"),
    ],
)
def test_bad_select(small, kwargs, message):
    with pytest.raises(RobustlabError, match=message):
        train(zoo.build("mlp"), small, "standard", 0.1, epochs=1, **kwargs)

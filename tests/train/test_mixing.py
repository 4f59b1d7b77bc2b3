"""mixup and interpolated adversarial training: the losses are the papers' formulas for the
coefficient and permutation drawn from the training generator (reproducible); refusals."""

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.data import load_digits_split
from robustlab.errors import RobustlabError
from robustlab.threat import LpBall
from robustlab.train import get_method
from robustlab.train.adversary import pgd
from robustlab.train.methods import StepContext
from robustlab.train.mixing import mix_points, mixing_coefficient, mixup_loss


@pytest.fixture(scope="module")
def batch():
    d = load_digits_split(train=True)
    return d.x[:24], d.y[:24]


def clone(gen: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(gen.get_state())


def manual_mixup(model, x, y, alpha, gen):
    lam = mixing_coefficient(alpha, gen)
    perm = torch.randperm(len(x), generator=gen)
    logits = model(lam * x + (1 - lam) * x[perm])
    ce = nn.functional.cross_entropy
    return lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])


def test_coefficient_is_reproducible_and_in_range():
    a = [mixing_coefficient(0.4, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1] and 0 <= a[0] <= 1
    draws = [mixing_coefficient(1e4, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(abs(v - 0.5) < 0.05 for v in draws)  # Beta(a, a) concentrates at 1/2
    with pytest.raises(RobustlabError, match="alpha"):
        mixing_coefficient(0.0, torch.Generator())


def test_mixup_loss_is_the_formula(batch):
    x, y = batch
    torch.manual_seed(0)
    model = zoo.build("mlp")
    gen = torch.Generator().manual_seed(5)
    expected = manual_mixup(model, x, y, 1.0, clone(gen))
    assert torch.allclose(mixup_loss(model, x, y, 1.0, gen), expected)
    ctx = StepContext(0.1, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(7), model)
    again = manual_mixup(model, x, y, 1.0, clone(ctx.generator))
    assert torch.allclose(get_method("mixup").step(model, x, y, ctx).loss, again)


def test_interpolated_at_is_the_mean_of_clean_and_adversarial_mixup(batch):
    x, y = batch
    torch.manual_seed(0)
    model = zoo.build("mlp")
    ctx = StepContext(0.1, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(7), model)
    gen = clone(ctx.generator)
    xa = pgd(model, x, y, LpBall("inf", 0.1), steps=10, generator=gen)
    expected = (manual_mixup(model, x, y, 1.0, gen) + manual_mixup(model, xa, y, 1.0, gen)) / 2
    out = get_method("interpolated-at").step(model, x, y, ctx)
    assert torch.allclose(out.loss, expected)
    with torch.no_grad():
        assert torch.equal(out.robust_correct, model(xa).argmax(1) == y)


def test_interpolated_at_attacking_the_interpolated_inputs(batch):
    x, y = batch
    torch.manual_seed(0)
    model = zoo.build("mlp")
    ctx = StepContext(0.1, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(7), model)
    gen = clone(ctx.generator)
    clean = manual_mixup(model, x, y, 1.0, gen)
    lam = mixing_coefficient(1.0, gen)
    perm = torch.randperm(len(x), generator=gen)
    ce = nn.functional.cross_entropy

    def mixed(logits, _y):
        return lam * ce(logits, y, reduction="sum") + (1 - lam) * ce(
            logits, y[perm], reduction="sum"
        )

    xm = lam * x + (1 - lam) * x[perm]
    xa = pgd(model, xm, y, LpBall("inf", 0.1, 0.0, 1.0), steps=10, loss=mixed, generator=gen)
    assert float((xa - xm).abs().max()) <= 0.1 + 1e-6
    expected = (clean + mixed(model(xa), y) / len(x)) / 2
    out = get_method("interpolated-at", adversary="interpolated").step(model, x, y, ctx)
    assert torch.allclose(out.loss, expected)
    with pytest.raises(RobustlabError, match="adversary must be one of clean, interpolated"):
        get_method("interpolated-at", adversary="mixed")


def manual_manifold(model, x, y, alpha, gen):
    """Manifold Mixup of the zoo MLP by hand: mix after Sequential index 2 or 4 (its ReLUs)."""
    lam = mixing_coefficient(alpha, gen)
    perm = torch.randperm(len(x), generator=gen)
    k = int(torch.randint(0, 3, (1,), generator=gen))
    cut = (0, 3, 5)[k]  # the input, or after model[2] / model[4]
    h = model[:cut](x)
    logits = model[cut:](lam * h + (1 - lam) * h[perm])
    ce = nn.functional.cross_entropy
    return k, lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])


def test_manifold_mixup_mixes_the_input_or_a_hidden_layer(batch):
    x, y = batch
    torch.manual_seed(0)
    model = zoo.build("mlp")
    assert mix_points(model) == [model[2], model[4]]
    layers = set()
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        k, expected = manual_manifold(model, x, y, 2.0, clone(gen))
        layers.add(k)
        got = mixup_loss(model, x, y, 2.0, gen, mix="manifold")
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert layers == {0, 1, 2}  # every layer drawn at least once over the seeds
    assert not model[2]._forward_hooks and not model[4]._forward_hooks  # hooks removed
    ctx = StepContext(0.1, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(7), model)
    _, again = manual_manifold(model, x, y, 1.0, clone(ctx.generator))
    got = get_method("mixup", mix="manifold").step(model, x, y, ctx).loss
    assert torch.allclose(got, again, rtol=1e-5, atol=1e-6)


def test_interpolated_at_with_manifold_mixup(batch):
    x, y = batch
    torch.manual_seed(0)
    model = zoo.build("mlp")
    ctx = StepContext(0.1, 1.0, 0.0, 1.0, 10, torch.Generator().manual_seed(7), model)
    gen = clone(ctx.generator)
    xa = pgd(model, x, y, LpBall("inf", 0.1), steps=10, generator=gen)
    expected = (manual_manifold(model, x, y, 2.0, gen)[1]
                + manual_manifold(model, xa, y, 2.0, gen)[1]) / 2  # fmt: skip
    out = get_method("interpolated-at", mix="manifold", alpha=2.0).step(model, x, y, ctx)
    assert torch.allclose(out.loss, expected, rtol=1e-5, atol=1e-6)


def test_manifold_mixup_refusals(batch):
    x, y = batch
    with pytest.raises(RobustlabError, match="mix must be one of input, manifold; found 'hidden'"):
        get_method("mixup", mix="hidden")
    with pytest.raises(RobustlabError, match="expects mix 'input'; found 'manifold'"):
        get_method("interpolated-at", adversary="interpolated", mix="manifold")
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), relu, nn.Linear(16, 16), relu,
                          nn.Linear(16, 10))  # fmt: skip
    with pytest.raises(RobustlabError, match="ran twice"):
        for seed in range(8):  # some seed draws the shared layer
            mixup_loss(twice, x, y, 1.0, torch.Generator().manual_seed(seed), mix="manifold")
    assert not relu._forward_hooks
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # no hidden layer: input mixup
    gen = torch.Generator().manual_seed(3)
    expected = manual_mixup(flat, x, y, 1.0, clone(gen))
    assert torch.allclose(mixup_loss(flat, x, y, 1.0, gen, mix="manifold"), expected)

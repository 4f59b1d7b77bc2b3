"""LOBSTER: insensitive weights shrink, the loss still falls, and the pruning stage sparsifies."""

import torch

from robustlab.train import METHODS, get_method, train
from robustlab.train.lobster import LOBSTER

from ..sensitivity.nets import cnn, data


def test_lobster_is_registered_beside_the_others():
    assert "lobster" in METHODS and isinstance(get_method("lobster"), LOBSTER)


def test_one_step_shrinks_weights_by_their_insensitivity_and_returns_the_loss():
    model, d = cnn().double(), data(12)
    x = d.x.double()
    before = model[3].weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), d.y)
    (g,) = torch.autograd.grad(loss, [model[3].weight])
    from robustlab.train.methods import StepContext

    ctx = StepContext(0.0, 1.0, 0.0, 1.0, 3, torch.Generator().manual_seed(0), model)
    out = LOBSTER(lmbda=0.1).step(model, x, d.y, ctx)
    s = g.abs() / g.abs().max()
    assert torch.allclose(model[3].weight.detach(), before - 0.1 * before * (1 - s))
    assert float(out.loss.detach()) == float(loss.detach())  # the value of the loss
    out.loss.backward()
    assert torch.allclose(model[3].weight.grad, g)  # its gradient at the weights before the shrink


def _prunable_share(method, digits) -> tuple[float, float]:
    """Share of weights the pruning stage (threshold 0.05) zeroes after 5 epochs, and the
    accuracy after it."""
    from robustlab.zoo import build

    torch.manual_seed(0)
    model = build("cnn")
    train(model, digits.subset(400), method, 0.0, epochs=5, batch_size=16, lr=1e-2)
    LOBSTER(threshold=0.05).finish(model)
    ws = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    zeros = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    with torch.no_grad():
        acc = float((model(digits.x).argmax(1) == digits.y).float().mean())
    return zeros, acc


def test_lobster_makes_many_more_weights_prunable_than_standard_training(digits):
    digits = digits.matched_to((1, 8, 8))
    std_zeros, std_acc = _prunable_share("standard", digits)
    lob_zeros, lob_acc = _prunable_share(LOBSTER(lmbda=0.02, adversarial=False), digits)
    assert lob_zeros > std_zeros + 0.25
    assert lob_acc > 0.8 and std_acc > 0.8

import torch

from robustlab import zoo
from robustlab.attacks import predict


def test_training_is_deterministic():
    a = zoo.train_digits("mlp", seed=3, epochs=2)
    b = zoo.train_digits("mlp", seed=3, epochs=2)
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_pretrained_mlp_accuracy_and_cache(mlp, digits):
    acc = (predict(mlp, digits.x) == digits.y).float().mean().item()
    assert acc >= 0.93
    again = zoo.pretrained("mlp")  # from the cache
    assert torch.equal(again(digits.x[:5]), mlp(digits.x[:5]))


def test_cnn_trains(digits):
    cnn = zoo.pretrained("cnn")
    assert (predict(cnn, digits.x) == digits.y).float().mean().item() >= 0.93

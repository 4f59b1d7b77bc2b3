"""The diagonal empirical Fisher against per-example gradients computed one by one."""

import torch

from robustlab.sensitivity.fisher import _looped_squares, fisher_diagonal

from .nets import blobs, tiny


def test_fisher_diagonal_is_the_mean_squared_per_example_gradient():
    model, data = tiny(), blobs(n=23)
    r = fisher_diagonal(model, data, batch_size=5)  # several batches, a short last one
    names = [n for n, _ in model.named_parameters()]
    want = _looped_squares(model, names, data.x, data.y)
    for n in names:
        assert torch.allclose(r.diagonal[n], want[n] / len(data), rtol=1e-10, atol=1e-14)
    assert [row["name"] for row in r.layers] == ["0", "2"]
    total = sum(float(want[n].sum()) for n in names) / len(data)
    assert abs(r.trace - total) <= 1e-10 * total
    assert r.layers[0]["mean"] == r.layers[0]["trace"] / (5 * 6 + 6)


def test_fisher_of_a_batchnorm_cnn_in_eval_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(2 * 4 * 4, 3),
    )  # fmt: skip
    model.eval()
    from robustlab.data import Dataset

    data = Dataset("img", torch.rand(6, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2]))
    r = fisher_diagonal(model, data, batch_size=4)
    names = [n for n, _ in model.named_parameters()]
    want = _looped_squares(model, names, data.x, data.y)
    for n in names:
        assert torch.allclose(r.diagonal[n], want[n] / 6, rtol=1e-4, atol=1e-9)
    assert not model.training

"""Corruptions on data in a value range other than [0, 1] (here the ImageNet-normalised range
[-2.16, 2.64]): mapped to [0, 1] and back, clipped to the data's range, never silently to [0, 1];
values outside the declared range are a one-line error."""

import pytest
import torch
from torch import nn

from robustlab.corruptions import corrupt, evaluate_corruptions, get_corruption
from robustlab.data import Dataset
from robustlab.errors import RobustlabError

from .images import digits_images

LO, HI = -2.16, 2.64


def _scaled(x01: torch.Tensor) -> torch.Tensor:
    return LO + x01 * (HI - LO)


@pytest.mark.parametrize("name", ["gaussian_noise", "fog", "contrast", "jpeg_compression"])
def test_a_declared_range_is_kept(name):
    x01 = digits_images(8, (32, 32))
    x = _scaled(x01)
    out = corrupt(x, name, 3, seed=1, lower=LO, upper=HI)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= torch.tensor(LO) and out.max() <= torch.tensor(HI)
    assert out.min() < -0.5  # not clipped to [0, 1]
    ref = _scaled(corrupt(x01, name, 3, seed=1))  # the same corruption on the [0, 1] scale
    assert torch.allclose(out, ref, atol=1e-5 * (HI - LO))
    assert torch.equal(get_corruption(name)(x, 3, 1, lower=LO, upper=HI), out)


def test_values_outside_the_range_are_an_error():
    x = _scaled(digits_images(4, (32, 32)))
    with pytest.raises(RobustlabError) as e:
        corrupt(x, "gaussian_noise", 1)  # default [0, 1]: no silent clipping
    msg = str(e.value)
    assert "\n" not in msg and "[0, 1]" in msg and "lower=" in msg
    with pytest.raises(RobustlabError, match="lower < upper"):
        corrupt(x, "gaussian_noise", 1, lower=1.0, upper=0.0)


class _Recorder(nn.Module):
    """A linear model that records the range of every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        self.seen = [float("inf"), float("-inf")]

    def forward(self, x):
        self.seen = [min(self.seen[0], float(x.min())), max(self.seen[1], float(x.max()))]
        return self.lin(x)


def test_evaluation_corrupts_in_the_data_range():
    torch.manual_seed(0)
    x = _scaled(digits_images(16, (32, 32)))
    data = Dataset("normalised", x, torch.zeros(16, dtype=torch.long), LO, HI)
    model = _Recorder()
    res = evaluate_corruptions(model, data, "gaussian_noise,brightness", "1,5")
    assert len(res.table) == 4
    lo32, hi32 = float(torch.tensor(LO)), float(torch.tensor(HI))  # the range in float32
    assert lo32 <= model.seen[0] < -1.0 and 1.5 < model.seen[1] <= hi32

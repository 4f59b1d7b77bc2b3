"""The helper that derives comparison tolerances from dtype and magnitude (tests/tolerance.py)."""

import pytest
import torch

from robustlab import zoo

from .tolerance import assert_close_rounding, gamma, network_magnitude, network_terms


def test_terms_and_magnitude_of_the_zoo_mlp(mlp, digits):
    x = digits.x[:6]
    assert network_terms(mlp, x) == 65 + 129 + 65
    assert network_terms(zoo.build("cnn"), x) == 10 + 145 + 513 + 65
    scale = network_magnitude(mlp, x, 3)
    with torch.no_grad():
        assert (mlp(x)[:, 3].abs() <= scale).all()
    assert gamma(100) == pytest.approx(100 * 2.0**-24, rel=1e-5)


def test_batched_and_single_results_stay_inside_and_wrong_targets_outside(mlp, digits):
    x = digits.x[:7]
    with torch.no_grad():
        batched = mlp(x)
        n, scale = network_terms(mlp, x), network_magnitude(mlp, x, 0)
        for i in range(7):
            single = mlp(x[i : i + 1])[0]
            assert_close_rounding(single[:1], batched[i, :1], scale[i], n)
            with pytest.raises(AssertionError, match="exceeds the rounding bound"):
                assert_close_rounding(single[1:2], batched[i, :1], scale[i], n)

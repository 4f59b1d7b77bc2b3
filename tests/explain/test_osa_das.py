"""OSA-DAS: subspaces of augmented views and their orthogonal degree."""

import math

import pytest
import torch
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.explain import get_explainer
from robustlab.explain.osa_das import Views, orthogonal_degree, subspace


def test_orthogonal_degree_known_answers():
    e = torch.eye(4, dtype=torch.float64)
    assert orthogonal_degree(e[:, :2], e[:, :2]).item() == pytest.approx(0.0, abs=1e-15)
    assert orthogonal_degree(e[:, :2], e[:, 2:]).item() == pytest.approx(1.0, abs=1e-15)
    tilted = torch.stack([e[:, 0], (e[:, 1] + e[:, 2]) / math.sqrt(2)], 1)
    # canonical angles 0 and 45 degrees: 1 - (1 + 1/2) / 2
    assert orthogonal_degree(e[:, :2], tilted).item() == pytest.approx(0.25, abs=1e-15)


def test_subspace_spans_the_views():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(10, 3, dtype=torch.float64)).Q
    feats = (basis @ torch.randn(3, 8, dtype=torch.float64)).T  # 8 views inside the span
    assert orthogonal_degree(subspace(feats, 3), basis).item() == pytest.approx(0.0, abs=1e-12)


def test_views_are_fixed_and_the_first_is_the_input():
    v = Views.draw(5, (1, 8, 8), shift=1, contrast=0.1, noise=0.02, seed=0)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(v(x, torch.zeros(3, dtype=torch.long)), x)
    again = Views.draw(5, (1, 8, 8), shift=1, contrast=0.1, noise=0.02, seed=0)
    assert torch.equal(v(x, torch.tensor([1, 2, 4])), again(x, torch.tensor([1, 2, 4])))


def test_only_the_pixels_the_model_reads_matter():
    """A model reading the top-left 2x2 pixels: windows that stay clear of them (even after a
    one-pixel shift) leave the subspace unchanged, so far pixels get 0."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 10)

    class TopLeft(nn.Module):
        def forward(self, x):
            return lin(x[:, 0, :2, :2].flatten(1))

    x = torch.rand(3, 1, 8, 8) + 0.5
    r = get_explainer("osa-das", window=2, stride=1)(TopLeft(), x)
    a = r.attributions
    assert a.shape == x.shape and (a >= 0).all()
    assert a[:, :, 5:, :].abs().max() < 1e-9 and a[:, :, :, 5:].abs().max() < 1e-9
    assert (a[:, 0, 0, 0] > 1e-3).all()


def test_bad_input(cnn, digits):
    x = digits.x[:2]
    with pytest.raises(RobustlabError, match="dim must be at most n_augment"):
        get_explainer("osa-das", n_augment=2, dim=3)(cnn, x)
    with pytest.raises(RobustlabError, match="n_augment must be a positive"):
        get_explainer("osa-das", n_augment=0)(cnn, x)
    with pytest.raises(RobustlabError, match="shift, contrast and noise"):
        get_explainer("osa-das", noise=-1.0)(cnn, x)
    with pytest.raises(RobustlabError, match="dim must be at most the outputs"):
        get_explainer("osa-das", n_augment=12, dim=11)(cnn, x)

"""Augmentations: shape, range, randomness from the generator, gradients through them."""

import pytest
import torch

from robustlab.detect import Augment
from robustlab.errors import RobustlabError


def test_views_keep_shape_and_range_and_are_seeded(digits):
    x = digits.x[:6]
    aug = Augment()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_identity_augment_and_gradients(digits):
    x = digits.x[:3].clone().requires_grad_(True)
    same = Augment(min_scale=1.0, shift=0.0, degrees=0.0, noise=0.0)(x)
    assert torch.allclose(same, x, atol=1e-5)
    (g,) = torch.autograd.grad(Augment()(x).sum(), x)
    assert g.abs().sum() > 0


def test_augment_needs_images():
    with pytest.raises(RobustlabError, match="images"):
        Augment()(torch.rand(3, 64))

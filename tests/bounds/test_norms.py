"""Rigorous operator-norm bounds (Gram iteration with rounding accounted for): never below the
float64 SVD, within a hair above it; orthogonal matrices at 1; convolutions against their explicit
matrices; the differentiable training bound above the norm, with gradients."""

import math

import pytest
import torch
from torch import nn

from robustlab.bounds.norms import (
    conv_norm_upper,
    conv_spectrum,
    gram_bound,
    gram_upper,
    matrix_norm_upper,
)


def svd_norm(w: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(w.to(torch.complex128 if w.is_complex() else torch.float64),
                                    ord=2).item()  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (5, 7), (64, 128), (10, 64), (200, 3)])
def test_dense_bound_is_above_and_tight(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64)
    exact, bound = svd_norm(w), matrix_norm_upper(w)
    assert exact <= bound <= exact * (1 + 1e-9)


@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1.0, 1e30, 1e200])
def test_any_magnitude(scale):
    torch.manual_seed(1)
    w = torch.randn(6, 9, dtype=torch.float64) * scale
    exact = svd_norm(w)
    assert exact <= matrix_norm_upper(w) <= exact * (1 + 1e-9)


def test_orthogonal_and_degenerate_matrices():
    torch.manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(128, 128, dtype=torch.float64))
    assert 1 <= matrix_norm_upper(q) <= 1 + 1e-8  # all singular values equal: no gap needed
    assert 1 <= matrix_norm_upper(q[:, :40]) <= 1 + 1e-8
    assert matrix_norm_upper(q.float()) <= 1 + 1e-6  # float32 storage moves it by ~1e-7
    assert matrix_norm_upper(torch.zeros(3, 4)) == 0
    rank1 = torch.ones(5, 1, dtype=torch.float64) @ torch.arange(4.0, dtype=torch.float64)[None]
    assert svd_norm(rank1) <= matrix_norm_upper(rank1) <= svd_norm(rank1) * (1 + 1e-9)


def test_complex_batches():
    torch.manual_seed(3)
    a = torch.randn(11, 4, 6, dtype=torch.complex128)
    bounds = gram_upper(a)
    exact = torch.linalg.matrix_norm(a, ord=2)
    assert (exact <= bounds).all() and (bounds <= exact * (1 + 1e-9)).all()


def explicit_norm(layer: nn.Module, shape) -> float:
    n = math.prod(shape)
    layer = layer.double()
    eye = torch.eye(n, dtype=torch.float64).view(n, *shape)
    with torch.no_grad():
        mat = (layer(eye) - layer(torch.zeros(1, *shape, dtype=torch.float64))).reshape(n, -1)
    return torch.linalg.matrix_norm(mat, ord=2).item()


@pytest.mark.parametrize(
    "kw",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": 3, "padding": 0},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        {"kernel_size": 3, "dilation": 2, "padding": 2},
        {"kernel_size": 3, "groups": 2, "padding": 1},
        {"kernel_size": (2, 3), "padding": (1, 0)},
        {"kernel_size": 2, "stride": 2},
        {"kernel_size": 3, "stride": 3},
    ],
)
def test_conv_bound_contains_the_explicit_matrix(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, **kw)
    bound = conv_norm_upper(conv.weight, (7, 9), stride=conv.stride,
                            pads=tuple(conv._reversed_padding_repeated_twice),
                            dilation=conv.dilation, groups=conv.groups)  # fmt: skip
    exact = explicit_norm(conv, (4, 7, 9))
    assert exact <= bound
    if conv.stride == conv.kernel_size:  # non-overlapping windows: the patch matrix is exact
        assert bound <= exact * (1 + 1e-9)
    elif conv.stride == (1, 1):
        assert bound < 1.2 * exact


def test_training_bound_is_an_upper_bound_with_gradients():
    torch.manual_seed(4)
    w = torch.randn(3, 8, 5, requires_grad=True)
    b = gram_bound(w, iters=6)
    assert (torch.linalg.matrix_norm(w.detach(), ord=2) <= b * (1 + 1e-5)).all()
    b.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    k = torch.randn(6, 4, 3, 3)
    spec = conv_spectrum(k, (9, 11))
    assert spec.shape == (99, 6, 4)
    circ = gram_bound(spec, iters=10).max().item()
    assert conv_norm_upper(k, (7, 9), stride=(1, 1), pads=(1, 1, 1, 1)) <= circ * (1 + 1e-5)

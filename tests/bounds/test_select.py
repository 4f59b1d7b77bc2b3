"""Selections (ops/select.py): the gather transpose equals autograd's on permutations, slices,
padding and flips, and maps that are not selections keep the autograd transpose."""

import pytest
import torch
import torch.nn.functional as F

from robustlab.bounds.ops.base import vjp_backward
from robustlab.bounds.ops.select import Select, select

FNS = {
    "permute": lambda t: t.permute(0, 3, 1, 2),
    "transpose": lambda t: t.transpose(1, 3),
    "slice": lambda t: t[:, 1:, ::2, 1:3],
    "pad": lambda t: F.pad(t, (1, 0, 2, 1)),
    "flip": lambda t: t.flip(2),
    "index": lambda t: t[:, :, torch.tensor([2, 0])],
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_gather_transpose_matches_autograd(name):
    fn = FNS[name]
    example = torch.zeros(1, 2, 3, 4)
    op = select(fn, example, name)
    assert isinstance(op, Select)
    out_shape = fn(example).shape[1:]
    A = torch.randn(2, 5, *out_shape, dtype=torch.float64, requires_grad=True)
    (got,), bias = op.backward(A, [(2, 3, 4)])
    want = vjp_backward(fn, A, (2, 3, 4))
    assert torch.equal(got, want) and bias.abs().max() == 0
    (g,) = torch.autograd.grad(got.square().sum(), A)  # differentiable (alpha-CROWN)
    (g_want,) = torch.autograd.grad(want.square().sum(), A)
    assert torch.equal(g, g_want)


@pytest.mark.parametrize(
    "fn",
    [lambda t: 2 * t, lambda t: t.cumsum(1), lambda t: (t + t.flip(3)) / 2, lambda t: t.sum(1)],
)
def test_other_linear_maps_keep_the_autograd_transpose(fn):
    assert not isinstance(select(fn, torch.zeros(1, 2, 3, 4), "map"), Select)

"""Input splitting's leaf checks (leaves.py): alpha-CROWN on the last rows is sound on dense
samples, never looser than CROWN on the same intermediate bounds, and only positive slack
closes a disjunct."""

from __future__ import annotations

import copy

import pytest
import torch

from robustlab.bounds.graph import graph_of
from robustlab.verify import bab
from robustlab.verify.leaves import alpha_close

from .small_nets import box_sample, relu_mlp


@pytest.mark.parametrize("seed", range(4))
def test_alpha_on_the_last_rows_is_sound_and_never_looser_than_crown(seed):
    """alpha_close: each disjunct's slack is a lower bound of its best row (dense samples),
    at least CROWN's on the same intermediate bounds, and only positive slack closes."""
    net = relu_mlp(seed, 3, width=12)
    g = graph_of(net, (3,))
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    groups = [slice(0, 2), slice(2, 3)]
    L = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [0.5, -0.25, 0.0]], dtype=torch.float64)
    H = L + 0.5
    every: dict = {}
    lb, _, _ = bab.bound_boxes(g, L, H, C, (3,), out=every)
    with torch.no_grad():
        ys = [
            copy.deepcopy(net).double()(box_sample(L[b], H[b], 8000, seed)) @ C.T for b in range(3)
        ]
    low = torch.stack([y.amin(0) for y in ys])  # (3, rows): sampled minima
    d = (low - 0.01 * (1 + low.abs())).amin(0)  # most rows refutable
    margin = torch.zeros(3, 3, dtype=torch.float64)
    open_ = torch.ones(3, 2, dtype=torch.bool)
    got, slack = alpha_close(g, every, torch.arange(3), L, H, C, d, groups, margin, open_, (3,))
    for b in range(3):
        for k, gr in enumerate(groups):
            best_sampled = float((ys[b][:, gr] - d[gr]).amax(1).min())
            assert slack[b, k] <= best_sampled + 1e-9
            assert slack[b, k] >= float((lb[b, gr] - d[gr]).max()) - 1e-9
    assert torch.equal(got, open_ & ~(slack > 0))

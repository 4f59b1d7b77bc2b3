"""Per-box hold margins (margins.py): a box's margin is hold_margin's formula on the box itself,
and never more than the root box's where the search takes the smaller."""

from __future__ import annotations

import pytest
import torch

from robustlab.bounds.graph import graph_of
from robustlab.verify import bab
from robustlab.verify.margins import box_margins, output_rows
from robustlab.verify.spec import Disjunct, Property

from .small_nets import relu_mlp


@pytest.mark.parametrize("seed", range(3))
def test_box_margins_follow_each_box_and_never_exceed_the_roots(seed):
    """A box's margin is hold_margin's formula on the box itself (bounds_and_margins on it), and
    the search takes the smaller of it and the root box's: never more than before."""
    net = relu_mlp(seed, 3)
    g = graph_of(net, (3,))
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    d = torch.zeros(2, dtype=torch.float64)
    lo, hi = -torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    prop = Property(lo[0], hi[0], (Disjunct(C, d),))
    root_margin = bab.hold_margin(g, prop, (3,))
    L = torch.tensor([[-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [0.5, -0.25, 0.0]], dtype=torch.float64)
    H = L + 0.25
    rows, used = output_rows(C[None])
    lb, A, bias = bab.bound_boxes(g, L, H, rows[0], (3,))
    own = box_margins(lb, A, C, d, L, H, used)
    for b in range(3):
        _, ref = bab.bounds_and_margins(g, L[b : b + 1], H[b : b + 1], C[None], d[None], (3,))
        assert torch.allclose(own[b], ref[0], rtol=1e-12, atol=0)
    assert (torch.minimum(own, root_margin) <= root_margin).all()
    assert (own < root_margin).any()  # small boxes: smaller outputs, smaller margins

"""``compute_bounds`` returns one type (issue 17): a ``BoundResult`` for every method and every
option, used as the ``Bounds`` it is, with every node's bounds only when asked."""

import pytest
import torch

from robustlab.bounds import METHODS, BoundResult, Bounds, compute_bounds
from robustlab.threat import Box, LpBall

from .nets import make


@pytest.mark.parametrize("method", METHODS)
def test_every_call_returns_one_type(method):
    net, shape = make("cnn", 0)
    x0 = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    kw = {"alpha_iterations": 2} if method == "alpha-crown" else {}
    region = (LpBall("inf", 0.05), x0)
    plain = compute_bounds(net, region, method, **kw)
    full = compute_bounds(net, region, method, return_intermediate=True, **kw)
    lower_only = compute_bounds(net, Box(x0 - 0.05, x0 + 0.05), method, bound_upper=False, **kw)
    for res in (plain, full, lower_only):
        assert type(res) is BoundResult and isinstance(res, Bounds)
        assert res.lower.shape == res.upper.shape == net(x0).shape
        assert res.computed_in == torch.float64
    assert plain.intermediate is None
    assert isinstance(full.intermediate, dict) and len(full.intermediate) > 2
    out = full.intermediate[max(full.intermediate)]
    assert (out.lower <= net(x0) + 1e-6).all() and (net(x0) <= out.upper + 1e-6).all()
    assert torch.equal(full.lower, plain.lower) and torch.equal(full.upper, plain.upper)
    # used as a Bounds: .bounds (the earlier field), intersect, to_dict
    assert type(full.bounds) is Bounds and torch.equal(full.bounds.lower, full.lower)
    both = plain.intersect(full)
    assert type(both) is Bounds and torch.equal(both.upper, plain.upper)
    assert set(plain.to_dict()) == {"lower", "upper"}
    assert (lower_only.lower <= net(x0)).all()

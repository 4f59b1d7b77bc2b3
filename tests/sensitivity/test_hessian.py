"""Known answers: Hutchinson's traces and power iteration against torch.func's exact Hessian."""

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.sensitivity.hessian import hessian_vector_products, hutchinson, top_eigenvalues
from robustlab.sensitivity.layers import layers

from .nets import blobs, exact_hessian, tiny


def _blocks(H, sizes, groups):
    """Diagonal blocks of H per layer (a layer owns consecutive parameter tensors)."""
    out, k, t = [], 0, 0
    for g in groups:
        n = sum(sizes[t : t + len(g.params)])
        out.append(H[k : k + n, k : k + n])
        k, t = k + n, t + len(g.params)
    return out


def test_hessian_vector_products_match_the_exact_hessian_streamed_in_batches():
    model, data = tiny(), blobs()
    H, _ = exact_hessian(model, data)
    params = list(model.parameters())
    v = [torch.randn_like(p) for p in params]
    (hv,) = hessian_vector_products(model, data, params, [(list(range(len(params))), v)], 7)
    got = torch.cat([h.reshape(-1) for h in hv])
    want = H @ torch.cat([t.reshape(-1) for t in v])
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("act", [torch.nn.Tanh, torch.nn.ReLU])
def test_hutchinson_is_within_5_percent_of_the_exact_traces(act):
    model, data = tiny(act=act), blobs()
    H, sizes = exact_hessian(model, data)
    groups = layers(model)
    r = hutchinson(model, data, samples=2000, batch_size=40, seed=0, chunk=500)
    exact = [float(b.trace()) for b in _blocks(H, sizes, groups)]
    for est, want in zip(r.layers, exact, strict=True):
        assert est.trace == pytest.approx(want, rel=0.05)
        assert abs(est.trace - want) <= 4 * est.stderr  # the standard error is not too small
    assert r.total.trace == pytest.approx(float(H.trace()), rel=0.05)
    assert [e.name for e in r.layers] == ["0", "2"]


def test_the_95_percent_interval_covers_the_exact_trace_about_95_percent_of_the_time():
    model, data = tiny(), blobs()
    H, sizes = exact_hessian(model, data)
    want = float(H.trace())
    hits = [
        (lambda e: e.ci_low <= want <= e.ci_high)(
            hutchinson(model, data, samples=20, batch_size=40, seed=s, chunk=20).total
        )
        for s in range(100)
    ]
    assert 0.85 <= sum(hits) / len(hits) <= 1.0


@pytest.mark.parametrize("act", [torch.nn.Tanh, torch.nn.ReLU])
def test_power_iteration_is_within_1_percent_of_the_exact_top_eigenvalues(act):
    model, data = tiny(act=act), blobs()
    H, sizes = exact_hessian(model, data)
    groups = layers(model)
    per_layer, whole, passes = top_eigenvalues(model, data, iterations=300, batch_size=16)

    def top(m):
        ev = torch.linalg.eigvalsh(m)
        return float(ev[ev.abs().argmax()])

    for est, block in zip(per_layer, _blocks(H, sizes, groups), strict=True):
        assert est.eigenvalue == pytest.approx(top(block), rel=0.01)
    assert whole.eigenvalue == pytest.approx(top(H), rel=0.01)
    assert passes <= 300 and whole.converged


def test_bad_arguments_name_the_parameter():
    model, data = tiny(), blobs()
    with pytest.raises(RobustlabError, match="samples"):
        hutchinson(model, data, samples=0)
    with pytest.raises(RobustlabError, match="iterations"):
        top_eigenvalues(model, data, iterations=0)
    with pytest.raises(RobustlabError, match="batch_size"):
        hutchinson(model, data, batch_size=0)

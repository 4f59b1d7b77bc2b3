"""The conformance suite every registered explainer must pass."""

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.explain import REGISTRY, get_explainer

from ..tolerance import assert_close_rounding, network_magnitude, network_terms

FAST = {
    "saliency": {},
    "input-x-gradient": {},
    "integrated-gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 8},
    "occlusion": {},
    "grad-cam": {},
    "sobol": {"grid": 4, "n_designs": 8},
    "extremal": {"areas": (0.1, 0.3), "n_steps": 5},
    "fullgrad": {},
    "smooth-grad-cam++": {"n_samples": 4},
    "moreaugrad": {"n_steps": 3, "n_samples": 2},
    "osa-das": {"n_augment": 4, "dim": 2},
}
EXPECTED_PASSES = {  # (forward, backward) per input, without the prediction pass
    "saliency": (1, 1),
    "input-x-gradient": (1, 1),
    "integrated-gradients": (16 + 2, 16),
    "smoothgrad": (8, 8),
    "occlusion": (1 + 7 * 7, 0),  # window 2, stride 1 on 8x8
    "grad-cam": (1, 1),
    "sobol": (8 * (16 + 1), 0),
    "extremal": (2 * 5, 2 * 5),
    "fullgrad": (1, 1),
    "smooth-grad-cam++": (1 + 4, 4),
    "moreaugrad": (3 * 2, 3 * 2),
    "osa-das": (4 * (1 + 7 * 7), 0),  # 4 views of the input and of 49 occluded copies
}
# averaging steps an explainer adds to the network's sums (integrated gradients, SmoothGrad, Sobol)
STEPS = {
    name: max((v for v in FAST[name].values() if isinstance(v, int)), default=0) for name in FAST
}


def _per_input(scale, like):
    """A per-input scale (N,) broadcast against attributions of any shape (N, ...)."""
    return scale.view(-1, *[1] * (like.dim() - 1))


def test_every_registered_explainer_is_covered():
    assert set(REGISTRY) == set(FAST) == set(EXPECTED_PASSES)


@pytest.mark.parametrize("name", sorted(FAST))
def test_conformance(name, cnn, digits):
    x = digits.x[:6]
    params = {n: p.requires_grad for n, p in cnn.named_parameters()}
    for p in cnn.parameters():
        p.grad = None
    for training in (True, False):
        cnn.train(training)
        r = get_explainer(name, **FAST[name])(cnn, x)
        assert cnn.training == training
        shape = (6, 4, 4) if name == "sobol" else x.shape
        assert r.attributions.shape == shape and r.attributions.dtype == x.dtype
        assert torch.isfinite(r.attributions).all()
        fwd, bwd = EXPECTED_PASSES[name]
        assert (r.n_forward, r.n_backward) == (6 * fwd + 6, 6 * bwd)  # + 6: predicted classes
        assert r.seconds > 0 and r.method == name
        assert torch.equal(r.classes, cnn(x).argmax(1))
    cnn.eval()
    assert all(p.grad is None for p in cnn.parameters())
    assert {n: p.requires_grad for n, p in cnn.named_parameters()} == params
    again = get_explainer(name, **FAST[name])(cnn, x)
    assert torch.equal(r.attributions, again.attributions)
    d = r.to_dict()
    assert {"method", "attributions", "n_forward", "n_backward", "seconds"} <= d.keys()
    assert ("delta" in d) == (name == "integrated-gradients")


@pytest.mark.parametrize("name", sorted(FAST))
def test_target_kinds_agree(name, cnn, digits):
    x = digits.x[:5]
    e = get_explainer(name, **FAST[name])
    by_int = e(cnn, x, 3).attributions
    by_labels = e(cnn, x, torch.full((5,), 3)).attributions
    by_callable = e(cnn, x, lambda logits: logits[:, 3]).attributions
    assert torch.equal(by_int, by_labels)
    # float32 work in other shapes: equal up to rounding (tests/tolerance.py), never bit for bit
    n_terms = network_terms(cnn, x) + STEPS[name]
    scale = _per_input(network_magnitude(cnn, x, 3), by_int)
    assert_close_rounding(by_callable, by_int, scale, n_terms)
    if name in ("smoothgrad", "smooth-grad-cam++", "moreaugrad"):
        return  # noise depends on the input's place in the batch: one input alone gets other noise
    per_label = e(cnn, x, torch.arange(5)).attributions
    scale = network_magnitude(cnn, x, torch.arange(5))
    for i in range(5):
        one = e(cnn, x[i : i + 1], i).attributions
        assert_close_rounding(one[0], per_label[i], scale[i], n_terms)


@pytest.mark.parametrize("name", sorted(FAST))
def test_batch_size_changes_nothing(name, cnn, digits):
    x = digits.x[:5]
    big = get_explainer(name, **FAST[name])(cnn, x, 2)
    small = get_explainer(name, **FAST[name], batch_size=7)(cnn, x, 2)
    scale = _per_input(network_magnitude(cnn, x, 2), big.attributions)
    assert_close_rounding(
        small.attributions, big.attributions, scale, n_terms=network_terms(cnn, x) + STEPS[name]
    )
    assert (big.n_forward, big.n_backward) == (small.n_forward, small.n_backward)


@pytest.mark.parametrize("name", sorted(FAST))
def test_reused_module_and_inplace_relu(name, reused, digits):
    """Hooks break on modules called twice and on in-place ReLU; traversal does not."""
    x = digits.x[:4]
    r = get_explainer(name, **FAST[name])(reused, x, 1)
    assert torch.isfinite(r.attributions).all()
    assert r.attributions.abs().sum() > 0
    assert torch.equal(x, digits.x[:4])  # inputs untouched by the in-place ReLU


def test_bad_input(cnn, digits):
    x = digits.x[:3]
    e = get_explainer("saliency")
    with pytest.raises(RobustlabError, match="unknown explanation method 'nope'"):
        get_explainer("nope")
    with pytest.raises(RobustlabError, match=r"one target label per input \(3\)"):
        e(cnn, x, torch.tensor([1, 2]))
    with pytest.raises(RobustlabError, match=r"\[0, 9\]"):
        e(cnn, x, 10)
    with pytest.raises(RobustlabError, match="target must be"):
        e(cnn, x, 1.5)
    with pytest.raises(RobustlabError, match=r"map logits \(B, K\) to \(B,\)"):
        e(cnn, x, lambda logits: logits)
    with pytest.raises(RobustlabError, match="float batch"):
        e(cnn, torch.zeros(3, dtype=torch.long))
    with pytest.raises(RobustlabError, match="batch_size must be a positive"):
        get_explainer("saliency", batch_size=0)(cnn, x)
    with pytest.raises(RobustlabError, match="n_steps"):
        get_explainer("integrated-gradients", n_steps=0)(cnn, x)
    with pytest.raises(RobustlabError, match="baseline must be"):
        get_explainer("integrated-gradients", baseline=torch.zeros(3))(cnn, x)

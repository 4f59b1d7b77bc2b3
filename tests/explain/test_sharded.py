"""explain.sharded: every explainer over shards of the inputs gives the one-process run's result
(the noise of SmoothGrad, Smooth Grad-CAM++ and MoreauGrad included), for any shard size."""

import pytest
import torch

from robustlab.explain import REGISTRY, get_explainer
from robustlab.explain.sharded import explain_sharded
from robustlab.shards import Backend

from ..tolerance import network_terms, rounding_atol

SMALL = {  # few passes per input: the test is about the split, not the method
    "integrated-gradients": {"n_steps": 6},
    "smoothgrad": {"n_samples": 7, "batch_size": 10},  # blocks that straddle the shards
    "sobol": {"grid": 4, "n_designs": 8},
    "smooth-grad-cam++": {"n_samples": 3, "batch_size": 10},
    "moreaugrad": {"n_steps": 3, "n_samples": 2, "batch_size": 10},
    "osa-das": {"n_augment": 4},
    "extremal": {"n_steps": 20},
}


def _assert_same(sharded, whole, model, x):
    a, b = sharded.attributions.double(), whole.attributions.double()
    atol = rounding_atol(float(b.abs().max()), network_terms(model, x), torch.float32)
    torch.testing.assert_close(a, b, rtol=0, atol=atol)
    assert (sharded.n_forward, sharded.n_backward) == (whole.n_forward, whole.n_backward)
    assert sharded.method == whole.method
    if whole.classes is not None:
        assert torch.equal(sharded.classes, whole.classes)
    if whole.delta is not None:
        torch.testing.assert_close(sharded.delta.double(), whole.delta.double(), rtol=0,
                                   atol=atol * x[0].numel())  # fmt: skip


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_shards_give_the_one_process_result(method, cnn, digits):
    x = digits.x[:7]
    explainer = get_explainer(method, **SMALL.get(method, {}))
    whole = explainer(cnn, x)
    sharded = explain_sharded(explainer, cnn, x, backend=Backend(shard_size=3))
    _assert_same(sharded, whole, cnn, x)


def test_a_shard_told_nothing_would_get_other_noise(cnn, digits):
    """The check above means something: SmoothGrad's noise of input 3 is not that of input 0."""
    x = digits.x[:6]
    explainer = get_explainer("smoothgrad", n_samples=4, batch_size=8)
    whole = explainer(cnn, x).attributions
    alone = explainer(cnn, x[3:]).attributions  # its own run: x[3] gets x[0]'s noise
    assert (alone - whole[3:]).abs().max() > 1e-3 * whole.abs().max()


def test_labels_as_targets_are_cut_with_the_inputs(cnn, digits):
    x, y = digits.x[:5], digits.y[:5]
    explainer = get_explainer("saliency")
    sharded = explain_sharded(explainer, cnn, x, y, backend=Backend(shard_size=2))
    assert torch.equal(sharded.classes, y)
    _assert_same(sharded, explainer(cnn, x, y), cnn, x)

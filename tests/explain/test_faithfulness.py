"""Deletion / insertion AUC and max-sensitivity."""

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.explain import explain, get_explainer
from robustlab.explain.faithfulness import (
    METRICS,
    deletion_auc,
    insertion_auc,
    max_sensitivity,
)


def test_metrics_declare_their_direction():
    assert not METRICS["deletion"].higher_is_better
    assert METRICS["insertion"].higher_is_better
    assert METRICS["max-sensitivity"].category == "robustness"


def test_good_maps_beat_random_and_inverted_maps(cnn, digits):
    x = digits.x[:40]
    good = explain(cnn, x, "integrated-gradients", n_steps=32).attributions
    rand = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    d_good, d_rand, d_bad = (deletion_auc(cnn, x, a) for a in (good, rand, -good))
    i_good, i_rand, i_bad = (insertion_auc(cnn, x, a) for a in (good, rand, -good))
    assert d_good.mean() < d_rand.mean() < d_bad.mean()
    assert i_good.mean() > i_rand.mean() > i_bad.mean()
    assert ((0 <= d_good) & (d_good <= 1)).all()


def test_sobol_grid_maps_are_upsampled(cnn, digits):
    x = digits.x[:4]
    grid = explain(cnn, x, "sobol", grid=4, n_designs=8).attributions
    assert deletion_auc(cnn, x, grid, steps=8).shape == (4,)


def test_every_pixel_step_and_endpoints(linear, digits):
    """With one step per pixel, deletion starts at p(x) and ends at p(baseline)."""
    x = digits.x[:3]
    a = torch.rand(x.shape)
    auc = deletion_auc(linear, x, a, 5, steps=None, baseline=0.3)
    ins = insertion_auc(linear, x, a, 5, steps=None, baseline=0.3)
    assert auc.shape == ins.shape == (3,)
    flat = deletion_auc(linear, torch.full_like(x, 0.3), a, 5, baseline=0.3)
    p = linear(torch.full_like(x, 0.3)).softmax(1)[:, 5].double()
    assert torch.allclose(flat, p, atol=1e-6)


def test_max_sensitivity(linear, cnn, digits):
    x = digits.x[:5]
    saliency = get_explainer("saliency", abs=False)
    assert max_sensitivity(linear, x, saliency, 2).abs().max() < 1e-6  # constant gradient
    assert (max_sensitivity(cnn, x, saliency, radius=0.0) < 1e-6).all()
    s = max_sensitivity(cnn, x, saliency, radius=0.1, n_samples=4)
    assert s.shape == (5,) and (s > 0).all()


def test_bad_input(cnn, digits):
    x = digits.x[:3]
    with pytest.raises(RobustlabError, match="attributions must match"):
        deletion_auc(cnn, x, torch.zeros(3, 5))
    with pytest.raises(RobustlabError, match="give a class or labels"):
        insertion_auc(cnn, x, torch.zeros_like(x), lambda logits: logits[:, 0])
    with pytest.raises(RobustlabError, match="radius"):
        max_sensitivity(cnn, x, get_explainer("saliency"), radius=-1.0)


def test_shards_give_the_one_process_values(cnn, digits):
    """Per-input metrics over shards of the inputs (explain.sharded.map_shards): the same values;
    max-sensitivity's shards draw the whole run's noise (and SmoothGrad's)."""
    from robustlab.shards import Backend

    x, y = digits.x[:7], digits.y[:7]
    a = explain(cnn, x, "saliency").attributions
    shards = Backend(shard_size=3)
    eps = torch.finfo(torch.float32).eps
    for metric in (deletion_auc, insertion_auc):
        one = metric(cnn, x, a, y, steps=8)
        torch.testing.assert_close(metric(cnn, x, a, y, steps=8, backend=shards), one, rtol=0,
                                   atol=64 * eps)  # fmt: skip
    smoothgrad = get_explainer("smoothgrad", n_samples=4, batch_size=6)
    one = max_sensitivity(cnn, x, smoothgrad, n_samples=3)
    sharded = max_sensitivity(cnn, x, smoothgrad, n_samples=3, backend=shards)
    torch.testing.assert_close(sharded, one, rtol=0, atol=64 * eps)  # a ratio of norms: ~1

"""Masks: layer-wise top-k of a score, unstructured and by channel, kept through fine-tuning."""

import pytest
import torch

from robustlab.compress.masks import (
    apply_masks,
    check_sparsity,
    frozen_masks,
    keep_count,
    magnitude_masks,
    sparsity_report,
    top_mask,
)
from robustlab.errors import RobustlabError
from robustlab.train.loop import train

from ..sensitivity.nets import cnn, data


def test_top_mask_keeps_the_largest_share():
    s = torch.tensor([0.3, -5.0, 2.0, 0.1, 4.0, 1.0, 0.2, 0.0, 3.0, 0.5])
    assert top_mask(s, 0.7).tolist() == [0, 0, 1, 0, 1, 0, 0, 0, 1, 0]
    assert keep_count(10, 0.95) == 1 and keep_count(10, 0.0) == 10 and keep_count(100, 0.9) == 10


def test_magnitude_masks_prune_each_layer_to_the_target():
    model = cnn()
    masks = magnitude_masks(model, 0.75)
    apply_masks(model, masks)
    rep = sparsity_report(model)
    for row in rep["layers"]:
        assert row["sparsity"] == pytest.approx(
            1 - keep_count(row["weights"], 0.75) / row["weights"]
        )
    w = model[3].weight.detach()
    kept = w[w != 0].abs().min()
    assert (w[w == 0].numel() == 48 * 16) and kept > 0


def test_channel_masks_zero_whole_filters_and_their_biases_but_never_the_classes():
    model = cnn()
    masks = magnitude_masks(model, 0.5, "channel")
    assert set(masks) == {"0", "3"}  # the last layer's outputs are the classes
    apply_masks(model, masks)
    rep = sparsity_report(model, "channel")
    assert [r["zero_channels"] for r in rep["layers"]] == [2, 8, 0]
    dead = (model[0].weight.detach().reshape(4, -1) == 0).all(1)
    assert (model[0].bias.detach()[dead] == 0).all()
    # the channels kept are those of largest L1 norm
    norms = cnn()[0].weight.detach().abs().reshape(4, -1).sum(1)
    assert set(torch.topk(norms, 2).indices.tolist()) == set((~dead).nonzero().flatten().tolist())


@pytest.mark.parametrize("structure", ["unstructured", "channel"])
def test_pruned_weights_stay_exactly_zero_through_adversarial_fine_tuning(structure):
    model, d = cnn(), data()
    masks = magnitude_masks(model, 0.6, structure)
    with frozen_masks(model, masks):
        train(model, d, "pgd-at", 0.05, epochs=2, batch_size=16, init="keep")
    for n, (wm, bm) in masks.items():
        m = model.get_submodule(n)
        assert (m.weight.detach()[wm == 0] == 0).all()
        assert (m.weight.detach()[wm == 1] != 0).all()  # the rest trained
        if bm is not None:
            assert (m.bias.detach()[bm == 0] == 0).all()
    assert all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())
    assert not any(
        m.weight._backward_hooks for _, m in model.named_children() if hasattr(m, "weight")
    )


def test_bad_sparsity_and_structure_name_the_parameter():
    with pytest.raises(RobustlabError, match="sparsity must be numbers in"):
        check_sparsity([0.5, 1.0])
    with pytest.raises(RobustlabError, match="sparsity"):
        check_sparsity([])
    with pytest.raises(RobustlabError, match="structure must be one of"):
        magnitude_masks(cnn(), 0.5, "filter")

"""Robust weight signatures: the patch is robust - standard on the shallow layers, scaled."""

import pytest
import torch

from robustlab.compress.signature import (
    apply_signature,
    evaluate_signature,
    layer_differences,
    signature,
)
from robustlab.errors import RobustlabError

from ..sensitivity.nets import cnn, data


def test_scale_0_is_the_target_and_scale_1_on_the_standard_model_is_the_robust_layers():
    standard, robust = cnn(0), cnn(1)
    names, delta = signature(standard, robust, 2)
    assert names == ["0", "3"] and sorted(delta) == [0, 1, 2, 3]
    same = apply_signature(standard, delta, 0.0)
    assert all(
        torch.equal(a, b) for a, b in zip(same.parameters(), standard.parameters(), strict=True)
    )
    full = apply_signature(standard, delta, 1.0)
    p_full, p_rob, p_std = map(
        list, (full.parameters(), robust.parameters(), standard.parameters())
    )
    for i in range(4):
        assert torch.allclose(p_full[i], p_rob[i], atol=1e-6)
    for i in (4, 5):  # the deepest layer untouched
        assert torch.equal(p_full[i], p_std[i])
    half = apply_signature(standard, delta, 0.5)
    assert torch.allclose(list(half.parameters())[0], (p_std[0] + p_rob[0]) / 2, atol=1e-6)


def test_default_layers_are_the_first_half_and_differences_are_relative():
    standard, robust = cnn(0), cnn(0)
    with torch.no_grad():
        robust[0].weight.mul_(1.5)
    names, _ = signature(standard, robust)
    assert names == ["0", "3"]
    diff = layer_differences(standard, robust)
    w, b = standard[0].weight.detach(), standard[0].bias.detach()
    want = float((0.5 * w).norm() / torch.cat([w.flatten(), b]).norm())
    assert diff[0]["relative_difference"] == pytest.approx(want, rel=1e-6)
    assert diff[1]["relative_difference"] == 0.0


def test_architectures_must_match_and_layers_must_exist():
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with pytest.raises(RobustlabError, match="differ in architecture"):
        signature(cnn(), other)
    with pytest.raises(RobustlabError, match="layers must be in 1..3"):
        signature(cnn(0), cnn(1), 4)


def test_evaluate_signature_rows():
    standard, robust = cnn(0), cnn(1)
    r = evaluate_signature(standard, robust, data(24), 0.02, [0.0, 1.0], shallow=1,
                           bound_methods=("ibp",))  # fmt: skip
    assert [row["scale"] for row in r.rows] == [0.0, 1.0] and r.layers == ["0"]
    assert r.rows[0]["clean_accuracy"] == r.standard["clean_accuracy"]
    assert r.target == r.standard
    names = [m["name"] for m in r.to_dict()["metrics"]]
    assert "robust_accuracy@scale 1" in names

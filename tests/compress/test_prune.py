"""HYDRA's scores, PwoA's ADMM and distillation, and prune() end to end on tiny problems."""

import pytest
import torch

from robustlab.compress.hydra import _score_gradient, hydra_masks, scaled_scores
from robustlab.compress.masks import magnitude_masks
from robustlab.compress.prune import prune
from robustlab.compress.pwoa import PwoAObjective, hidden_outputs, hsic
from robustlab.errors import RobustlabError

from ..sensitivity.nets import cnn, data


def test_hydra_starts_from_the_magnitude_mask():
    model = cnn()
    s = scaled_scores(model[3], "unstructured")
    assert torch.equal(torch.topk(s.abs().flatten(), 100).indices.sort().values,
                       torch.topk(model[3].weight.detach().abs().flatten(), 100).indices.sort().values)  # fmt: skip
    assert float(s.abs().max()) == pytest.approx((6 / 64) ** 0.5)


def test_hydra_score_gradient_is_the_straight_through_chain_rule():
    # L(w * m(s)) with m passed straight through: dL/ds = dL/dw_eff * w * sign(s)
    w0 = torch.randn(3, 4, dtype=torch.float64)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 4, dtype=torch.float64)
    (((w0 * s.abs()) - target) ** 2).sum().backward()  # |s| in place of the mask
    g_eff = 2 * (w0 * s.detach().abs() - target)
    assert torch.allclose(_score_gradient(g_eff, w0, s.detach(), "unstructured"), s.grad)


def test_hydra_channel_score_gradient_includes_the_bias():
    w0, b0 = torch.randn(3, 2, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    s = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 2, dtype=torch.float64)
    m = s.abs()  # the straight-through mask of each output channel
    out = ((w0 * m[:, None, None]) * x).sum((1, 2)) + b0 * m
    (out**2).sum().backward()
    g_eff = 2 * out.detach()[:, None, None] * x  # dL/dw_eff
    gb = 2 * out.detach()  # dL/db_eff
    got = _score_gradient(g_eff, w0, s.detach(), "channel", gb, b0)
    assert torch.allclose(got, s.grad)


def test_hydra_masks_are_exactly_sparse_and_leave_the_weights_alone():
    model, d = cnn(), data()
    before = [p.detach().clone() for p in model.parameters()]
    masks, cost = hydra_masks(model, d, 0.8, objective="pgd-at", eps=0.05, epochs=2, batch_size=16)
    for (wm, _), (_, m) in zip(
        masks.values(), [("0", model[0]), ("3", model[3]), ("5", model[5])], strict=True
    ):
        assert int(wm.sum()) == max(1, m.weight.numel() - int(0.8 * m.weight.numel() + 1e-9))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad for p in model.parameters()) and cost["steps"] == 6
    # the scores moved: the mask is not the magnitude mask any more
    mag = magnitude_masks(model, 0.8)
    assert any(not torch.equal(masks[n][0], mag[n][0]) for n in masks)


def test_hsic_of_independent_and_dependent_samples():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, generator=g, dtype=torch.float64)
    z = torch.randn(200, 1, generator=g, dtype=torch.float64)

    def centred(t):
        k = t @ t.T
        return k - k.mean(0, keepdim=True)

    # linear kernels: HSIC is the squared (biased) covariance
    assert float(hsic(centred(x), centred(x))) == pytest.approx(
        float(x.var(unbiased=False)) ** 2, rel=1e-9
    )
    assert float(hsic(centred(x), centred(z))) < 0.02 * float(hsic(centred(x), centred(x)))


def test_pwoa_objective_is_zero_when_the_student_is_the_teacher_and_hsic_is_off():
    model, d = cnn().double(), data()
    obj = PwoAObjective(lambda_x=0.0, lambda_y=0.0)  # float64: 9000 x KL rounding stays ~1e-12
    x = d.x.double()
    assert float(obj.loss(model, model, x, d.y, 3).detach()) == pytest.approx(0.0, abs=1e-9)
    with hidden_outputs(model) as hidden:
        model(x)
    assert [h.shape[1] for h in hidden] == [4, 16]  # every weight layer but the last
    assert not model[0]._forward_hooks


@pytest.mark.parametrize("method", ["magnitude", "hydra", "pwoa"])
def test_prune_returns_a_sparse_copy_and_its_cost(method):
    model, d = cnn(), data()
    before = [p.detach().clone() for p in model.parameters()]
    pruned, info = prune(model, d, 0.7, method=method, objective="pgd-at", eps=0.05, epochs=1,
                         score_epochs=1, batch_size=16)  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert info["sparsity"] >= 0.69 and info["method"] == method
    assert info["objective"] == ("pwoa" if method == "pwoa" else "pgd-at")
    assert info["train_seconds"] >= info["finetune_seconds"] >= 0 and not pruned.training


def test_prune_errors_name_the_parameter():
    model, d = cnn(), data()
    with pytest.raises(RobustlabError, match="unknown pruning method 'l1'"):
        prune(model, d, 0.5, method="l1")
    with pytest.raises(RobustlabError, match="unknown objective 'fgsm'"):
        prune(model, d, 0.5, objective="fgsm")
    with pytest.raises(RobustlabError, match="score_epochs"):
        prune(model, d, 0.5, method="hydra", score_epochs=0)

"""Known answers: linear models, completeness, hand-split Grad-CAM, regions a model ignores."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.explain import explain
from robustlab.explain.integrated import path_rule
from robustlab.explain.occlusion import window_masks
from robustlab.explain.sobol_attribution import gaussian_blur


def test_linear_model_known_answers(linear, digits):
    x, k = digits.x[:4], 7
    w = linear[1].weight[k].view(1, 8, 8)
    grad = w.expand_as(x)
    assert torch.allclose(explain(linear, x, "saliency", k, abs=False).attributions, grad)
    assert torch.allclose(explain(linear, x, "input-x-gradient", k).attributions, x * grad)
    ig = explain(linear, x, "integrated-gradients", k, n_steps=3, baseline=0.25)
    assert torch.allclose(ig.attributions, (x - 0.25) * grad, atol=1e-6)
    assert ig.delta.abs().max() < 1e-5
    occ = explain(linear, x, "occlusion", k, window=1, stride=1)
    assert torch.allclose(occ.attributions, x * grad, atol=1e-5)
    sg = explain(linear, x, "smoothgrad", k, n_samples=4)
    assert torch.allclose(sg.attributions, grad, atol=1e-6)


@pytest.mark.parametrize("model", ["cnn", "reused"])
def test_integrated_gradients_completeness(model, request, digits):
    """sum(attributions) = f(x) - f(baseline) up to the reported delta, which shrinks with steps."""
    net = request.getfixturevalue(model)
    x = digits.x[:8]
    coarse = explain(net, x, "integrated-gradients", 4, n_steps=8)
    fine = explain(net, x, "integrated-gradients", 4, n_steps=256)
    with torch.no_grad():
        gap = (net(x)[:, 4] - net(torch.zeros_like(x))[:, 4]).double()
    for r in (coarse, fine):
        error = r.attributions.double().flatten(1).sum(1) - gap
        assert torch.allclose(error, r.delta, atol=1e-5)
        assert (error.abs() <= r.delta.abs() + 1e-5).all()
    assert fine.delta.abs().mean() < coarse.delta.abs().mean()
    assert fine.delta.abs().max() < 0.02 * gap.abs().max()


def test_path_rules():
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle"):
        a, w = path_rule(rule, 10)
        assert abs(w.sum() - 1) < 1e-12 and a.min() >= 0 and a.max() <= 1
        assert abs((w * a**2).sum() - 1 / 3) < 0.06  # integrates x^2
    with pytest.raises(RobustlabError, match="unknown integration rule"):
        path_rule("simpson", 4)


def test_gradcam_matches_a_hand_split_model(reused, digits):
    """Grad-CAM of the second call of the reused convolution, against the model cut by hand."""
    x = digits.x[:5]
    r = explain(reused, x, "grad-cam", 2, upsample=False)
    m = reused
    with torch.no_grad():
        h = F.relu(m.conv(x))
        h = F.relu(m.mid(h))
        a = m.mid(h)
    a.requires_grad_(True)
    score = m.fc(F.relu(a).flatten(1))[:, 2].sum()
    (g,) = torch.autograd.grad(score, a)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    assert torch.allclose(r.attributions, cam.detach(), atol=1e-6)
    second = explain(reused, x, "grad-cam", 2, layer="mid_1", upsample=False)  # fx node names
    assert torch.equal(second.attributions, r.attributions)
    first = explain(reused, x, "grad-cam", 2, layer="mid", upsample=False)
    with torch.no_grad():
        a1 = m.mid(F.relu(m.conv(x)))
    a1.requires_grad_(True)
    score = m.fc(F.relu(m.mid(F.relu(a1))).flatten(1))[:, 2].sum()
    (g1,) = torch.autograd.grad(score, a1)
    cam1 = F.relu((g1.mean((2, 3), keepdim=True) * a1).sum(1, keepdim=True))
    assert torch.allclose(first.attributions, cam1.detach(), atol=1e-6)
    r0 = explain(reused, x, "grad-cam", 2, layer="conv")
    assert r0.attributions.shape == x.shape
    with pytest.raises(RobustlabError, match="no layer 'nope'"):
        explain(reused, x, "grad-cam", 2, layer="nope")


def test_gradcam_needs_a_traceable_conv_model(linear, digits):
    with pytest.raises(RobustlabError, match="needs a Conv2d layer"):
        explain(linear, digits.x[:2], "grad-cam", 0)


def test_window_masks():
    m = window_masks((8, 8), 3, 2)
    assert m.shape == (9, 8, 8) and (m.flatten(1).sum(1) == 9).all()
    assert window_masks((10,), 4, 3).shape == (3, 10)
    with pytest.raises(RobustlabError, match="window must fit"):
        window_masks((8, 8), 9, 1)


class Quadrant(nn.Module):
    """A score that depends on the top-left 4x4 pixels only."""

    def forward(self, x):
        s = (x[:, :, :4, :4] ** 2).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("perturbation", ["inpainting", "blur", "amplitude"])
def test_sobol_finds_the_region_the_model_uses(perturbation, digits):
    x = digits.x[:3] + 0.1
    r = explain(Quadrant(), x, "sobol", 0, grid=4, n_designs=32, perturbation=perturbation)
    assert r.attributions.shape == (3, 4, 4)
    inside = r.attributions[:, :2, :2]
    outside = r.attributions.clone()
    outside[:, :2, :2] = 0
    if perturbation == "blur":  # the blur leaks neighbouring pixels into the quadrant
        assert inside.sum() > 0.5 * r.attributions.sum()
    else:
        assert outside.abs().max() < 1e-6 and (inside > 0).all()
    assert r.n_forward == 3 * 32 * (16 + 1)


def test_sobol_bad_input(cnn, digits):
    with pytest.raises(RobustlabError, match="unknown perturbation"):
        explain(cnn, digits.x[:2], "sobol", perturbation="noise")
    with pytest.raises(RobustlabError, match="at least 16x16"):
        explain(cnn, digits.x[:2], "sobol", grid=16)


def test_gaussian_blur_keeps_constants_and_mass():
    x = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(gaussian_blur(x, 1.5), x)


def test_gradcam_names_the_calls_of_a_reused_submodule(digits):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            return self.fc(self.block[0](self.block[0](x)).flatten(1))

    with pytest.raises(RobustlabError, match="called 2 times; name one call: block_0, block_1"):
        explain(Net(), digits.x[:2], "grad-cam", 0, layer="block.0")

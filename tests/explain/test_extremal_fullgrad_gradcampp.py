"""Extremal perturbations, FullGrad and Smooth Grad-CAM++ beyond the conformance suite."""

import pytest
import torch
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.explain import get_explainer
from robustlab.explain.faithfulness import deletion_auc
from robustlab.explain.fullgrad import normalise


def _patch_model() -> nn.Module:
    """A linear score that reads only the 2 x 2 patch at rows 5-6, columns 2-3."""
    w = torch.zeros(2, 64)
    patch = torch.zeros(8, 8)
    patch[5:7, 2:4] = 1
    w[0] = patch.flatten()
    lin = nn.Linear(64, 2, bias=False)
    lin.weight.data = w
    return nn.Sequential(nn.Flatten(), lin).eval()


@pytest.mark.parametrize("variant", ["preserve", "delete", "dual"])
def test_extremal_finds_the_only_evidence(variant):
    model, x = _patch_model(), torch.ones(2, 1, 8, 8)
    e = get_explainer("extremal", areas=(4 / 64,), n_steps=150, sigma=0.0, variant=variant)
    a = e(model, x, 0).attributions
    top = a[:, 0].flatten(1).topk(4, dim=1).indices.sort(1).values
    want = torch.tensor([42, 43, 50, 51])  # rows 5-6, columns 2-3
    assert torch.equal(top, want.expand(2, -1))
    assert ((0 <= a) & (a <= 1)).all()


def test_extremal_beats_random_order(cnn, digits):
    x = digits.x[:10]
    a = get_explainer("extremal", n_steps=100)(cnn, x).attributions
    rand = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert deletion_auc(cnn, x, a).mean() < deletion_auc(cnn, x, rand).mean()


def test_extremal_bad_input(cnn, digits):
    x = digits.x[:2]
    with pytest.raises(RobustlabError, match="unknown variant 'x'"):
        get_explainer("extremal", variant="x")(cnn, x)
    with pytest.raises(RobustlabError, match="unknown perturbation 'x'"):
        get_explainer("extremal", perturbation="x")(cnn, x)
    with pytest.raises(RobustlabError, match="areas must be fractions"):
        get_explainer("extremal", areas=(1.5,))(cnn, x)
    with pytest.raises(RobustlabError, match="expects images"):
        get_explainer("extremal")(nn.Sequential(nn.Linear(64, 10)), x.flatten(1))


def test_fullgrad_without_layers_is_input_times_gradient(linear, digits):
    """An MLP on flat inputs has no convolution: FullGrad is psi(x * grad) alone."""
    x = digits.x[:4].flatten(1)
    got = get_explainer("fullgrad")(linear, x, 3).attributions
    want = normalise(x * get_explainer("saliency", abs=False)(linear, x, 3).attributions)
    torch.testing.assert_close(got, want)


def test_fullgrad_adds_bias_maps(cnn, digits):
    x = digits.x[:4]
    full = get_explainer("fullgrad")(cnn, x, 2).attributions
    inputs = normalise(x * get_explainer("saliency", abs=False)(cnn, x, 2).attributions)
    assert (full >= 0).all()
    # two convolutions, their bias maps >= 0: the sum exceeds the input part
    assert (full - inputs).amax() > 0.5 and (full - inputs).amin() >= -1e-6
    assert full.amax() <= 1 + 16 + 32 + 1e-4  # psi in [0, 1], summed over each layer's channels


def test_smooth_gradcampp_without_noise_needs_one_sample(cnn, digits):
    x = digits.x[:4]
    one = get_explainer("smooth-grad-cam++", n_samples=1, sigma=0.0)(cnn, x, 1).attributions
    many = get_explainer("smooth-grad-cam++", n_samples=5, sigma=0.0)(cnn, x, 1).attributions
    torch.testing.assert_close(one, many)
    assert (one >= 0).all() and one.amax() > 0


def test_smooth_gradcampp_seeds(cnn, digits):
    x = digits.x[:3]
    a = get_explainer("smooth-grad-cam++", n_samples=4, seed=0)(cnn, x, 1).attributions
    b = get_explainer("smooth-grad-cam++", n_samples=4, seed=1)(cnn, x, 1).attributions
    assert not torch.equal(a, b)


def test_moreaugrad_of_a_linear_score_is_its_weight(linear, digits):
    """f(z) = w.z + b: the proximal point is x - rho w, so MoreauGrad is w exactly."""
    x = digits.x[:3]
    got = get_explainer("moreaugrad", sigma=0.0, n_samples=1, n_steps=60)(linear, x, 4)
    w = linear[1].weight[4].view(1, 1, 8, 8).expand_as(x)
    torch.testing.assert_close(got.attributions, w, atol=1e-5, rtol=1e-5)


def test_moreaugrad_small_rho_is_the_gradient_and_l1_is_sparse(cnn, digits):
    x = digits.x[:3]
    grad = get_explainer("saliency", abs=False)(cnn, x, 1).attributions
    mg = get_explainer("moreaugrad", sigma=0.0, n_samples=1, rho=1e-3, lr=5e-4, n_steps=40)
    a = mg(cnn, x, 1).attributions
    cos = (a.flatten(1) * grad.flatten(1)).sum(1) / (
        a.flatten(1).norm(dim=1) * grad.flatten(1).norm(dim=1)
    )
    assert (cos > 0.99).all()
    sparse = get_explainer("moreaugrad", sigma=0.0, n_samples=1, l1=2.0)(cnn, x, 1).attributions
    assert (sparse == 0).float().mean() > 0.3
    with pytest.raises(RobustlabError, match="rho > 0"):
        get_explainer("moreaugrad", rho=0.0)(cnn, x)


ONNX_CNNS = ["verivital/Convnet_avgpool.onnx", "oval21/nets/cifar_base_kw.onnx"]


@pytest.mark.parametrize("name", ONNX_CNNS)
def test_layer_explainers_reach_onnx_conv_nets(name):
    """FullGrad and Smooth Grad-CAM++ on conv nets read from ONNX (the graph view): every
    convolution's bias map is recorded and the maps are finite and not all zero."""
    from robustlab.explain.layers import Recorder, bias_of, traced
    from robustlab.model import load_model

    from ..conftest import SHARED

    path = SHARED / "benchmarks" / name
    if not path.is_file():
        pytest.skip("shared benchmarks are missing")
    model = load_model(path)
    x = torch.rand(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    gm = traced(model.module, "test")
    rec = Recorder(gm, lambda n, a, k, o: bias_of(gm, n, a, k) if o.dim() == 4 else None)
    rec.run(x)
    n_convs = sum("Conv" in str(n.target) for n in gm.graph.nodes)
    assert len(rec.outputs) == n_convs >= 1
    for method, kw in (("fullgrad", {}), ("smooth-grad-cam++", {"n_samples": 2})):
        a = get_explainer(method, **kw)(model.module, x).attributions
        assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().sum() > 0

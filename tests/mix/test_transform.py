"""MixedNUTS's transform and the mixed classifier: formula, members' limits, gradients, ONNX."""

import onnxruntime as ort
import pytest
import torch
from torch import nn

from robustlab._onnx import torch_to_onnx
from robustlab.errors import RobustlabError
from robustlab.mix import MixedClassifier, NutsMap, mixed_log_probs


def _lin(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def test_nuts_map_matches_the_formula_by_hand():
    z = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)
    mean, std = 3.0, (((z - 3.0) ** 2).mean()) ** 0.5
    expected = 2.0 * torch.relu((z - mean) / std - 0.5) ** 3.0
    got = NutsMap(scale=2.0, power=3.0, bias=-0.5)(z)
    assert torch.allclose(got, expected, atol=1e-6)
    assert float(got[0, 0]) == pytest.approx(0.0, abs=1e-20)  # clamped


@pytest.mark.parametrize("kw", [{"scale": 0.0}, {"power": -1.0}, {"bias": float("nan")}])
def test_nuts_map_rejects_bad_parameters(kw):
    with pytest.raises(RobustlabError, match=next(iter(kw))):
        NutsMap(**kw)


def test_mixture_limits_are_the_members():
    a, r, x = _lin(0), _lin(1), torch.rand(5, 1, 8, 8)
    lsm = torch.log_softmax
    assert torch.allclose(MixedClassifier(a, r, 0.0)(x), lsm(a(x), 1), atol=1e-5)
    assert torch.allclose(MixedClassifier(a, r, 1.0)(x), lsm(r(x), 1), atol=1e-5)
    t = NutsMap(2.0, 2.0, 0.5)
    assert torch.allclose(MixedClassifier(a, r, 1.0, t)(x), lsm(t(r(x)), 1), atol=1e-5)
    # the mixture is a distribution, and matches the logits-only form used for fitting
    out = MixedClassifier(a, r, 0.3, t)(x)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out, mixed_log_probs(a(x), r(x), 0.3, t), atol=1e-6)


def test_surrogate_keeps_outputs_and_changes_only_the_gradient():
    a, r = _lin(0), _lin(1)
    exact = MixedClassifier(a, r, 0.5, NutsMap(64.0, 8.0, 2.0))  # saturated: one-hot robust probs
    surr = exact.with_gradient("surrogate")
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    out = exact(x).detach()
    assert torch.allclose(
        out, surr(x).detach(), atol=8 * torch.finfo(out.dtype).eps * float(out.abs().max())
    )
    y = torch.arange(4)
    (g_exact,) = torch.autograd.grad(nn.functional.nll_loss(exact(x), y), x)
    (g_surr,) = torch.autograd.grad(nn.functional.nll_loss(surr(x), y), x)
    assert g_surr.abs().sum() > 0 and not torch.allclose(g_exact, g_surr)


@pytest.mark.parametrize("kw", [{"alpha": 1.5}, {"alpha": 0.5, "gradient": "none"}])
def test_mixture_rejects_bad_arguments(kw):
    with pytest.raises(RobustlabError):
        MixedClassifier(_lin(0), _lin(1), **kw)


def test_mixture_exports_to_one_onnx_graph():
    a = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    mixed = MixedClassifier(a, _lin(1), 0.4, NutsMap(4.0, 2.0, 0.5)).eval()
    proto = torch_to_onnx(mixed, (1, 8, 8))
    ops = {n.op_type for n in proto.graph.node}
    assert {"ReduceMean", "Sqrt", "Pow", "Log", "Softmax"} <= ops
    x = torch.rand(7, 1, 8, 8)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    want = mixed(x).detach()
    assert torch.allclose(got, want, atol=1e-4 * (1 + float(want.abs().max())))

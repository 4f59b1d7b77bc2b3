"""PyTorch modules reach the bound rules through the graph view: each expansion computes what the
module computes, and the bounds of small networks built from them contain sampled outputs."""

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.bounds.graph import SUPPORTED, graph_of
from robustlab.errors import UnsupportedOperation
from robustlab.threat import LpBall


def graph_forward(model, x):
    """The model evaluated through its bound graph (every node's ``forward``)."""
    graph = graph_of(model, tuple(x.shape[1:]))
    values = [x]
    for node in graph.nodes[1:]:
        values.append(node.op.forward(*[values[j] for j in node.inputs]))
    return values[-1]


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class WithWeights(SelfAttention):
    def forward(self, x):
        out, w = self.attn(x, x, x)  # weights averaged over the heads
        return out.sum(-1) + w.sum(-1)


class SDPA(nn.Module):
    def forward(self, x):
        q, k, v = x[:, None, :, :4], x[:, None, :, 4:], x[:, None, :, 2:6]
        return nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)[:, 0]


def _layer(**kw):
    return nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, **kw)


MODULES = {
    "mha": (lambda: SelfAttention(), (5, 8)),
    "mha-weights": (WithWeights, (5, 8)),
    "sdpa": (SDPA, (5, 8)),
    "encoder-post-norm": (lambda: _layer(), (5, 8)),
    "encoder-pre-norm-gelu": (lambda: _layer(norm_first=True, activation="gelu"), (5, 8)),
    "encoder": (
        lambda: nn.TransformerEncoder(_layer(), 2, enable_nested_tensor=False),
        (5, 8),
    ),
    "layer-norm": (lambda: nn.LayerNorm(8), (5, 8)),
    "layer-norm-2d": (lambda: nn.LayerNorm((5, 8)), (5, 8)),
    "gelu": (nn.GELU, (5, 8)),
    "softmax": (lambda: nn.Softmax(dim=1), (5, 8)),
    "log-softmax": (lambda: nn.LogSoftmax(dim=-1), (5, 8)),
    "conv-transpose-2d": (lambda: nn.ConvTranspose2d(3, 2, 3, 2, 1, output_padding=1), (3, 4, 4)),
    "conv-transpose-groups": (
        lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, groups=2, dilation=2),
        (4, 4, 4),
    ),
    "conv-transpose-1d": (lambda: nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1), (3, 6)),
    "upsample-nearest": (lambda: nn.Upsample(scale_factor=2), (2, 3, 3)),
    "upsample-bilinear": (lambda: nn.Upsample(size=(5, 7), mode="bilinear"), (2, 3, 3)),
    "upsample-corners": (
        lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        (2, 3, 3),
    ),
    "relu6-hardtanh": (lambda: nn.Sequential(nn.ReLU6(), nn.Hardtanh(0.5, 2.0)), (6,)),
    "global-max-pool": (lambda: nn.AdaptiveMaxPool2d(1), (3, 4, 5)),
    "global-max-pool-1d": (lambda: nn.AdaptiveMaxPool1d(1), (3, 7)),
    "max-pool-1d": (lambda: nn.MaxPool1d(3, stride=2, padding=1), (3, 8)),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_expansion_computes_what_the_module_computes(name):
    make, shape = MODULES[name]
    torch.manual_seed(0)
    m = make().eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        want = m(x).double()
        got = graph_forward(m, x.double())
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5 * (1 + want.abs().max()), rtol=0), name


@pytest.mark.parametrize(
    "name", ["mha", "encoder-pre-norm-gelu", "layer-norm", "sdpa", "global-max-pool", "max-pool-1d"]
)
def test_module_bounds_contain_sampled_outputs(name):
    make, shape = MODULES[name]
    torch.manual_seed(1)
    m = make().eval()
    exact = copy.deepcopy(m).double()
    x0 = torch.randn(2, *shape)
    threat = LpBall("inf", 0.05, -10.0, 10.0)
    pts = threat.sample(x0.double(), 2000)  # inside the float64 region
    with torch.no_grad():
        out = exact(pts.flatten(0, 1).double()).reshape(2000, 2, -1)
    for method in ("ibp", "crown"):
        b = compute_bounds(m, (threat, x0), method)
        lo, hi = b.lower.reshape(1, 2, -1).double(), b.upper.reshape(1, 2, -1).double()
        assert (out >= lo - 1e-9).all() and (out <= hi + 1e-9).all(), method


def test_unsupported_variants_are_named():
    cases = [
        (nn.MultiheadAttention(4, 2), "batch_first=False"),
        (nn.Upsample(scale_factor=2, mode="bicubic"), "mode 'bicubic'"),
    ]
    for m, match in cases:

        class Net(nn.Module):
            def __init__(self, m=m):
                super().__init__()
                self.m = m

            def forward(self, x):
                out = self.m(x, x, x) if isinstance(self.m, nn.MultiheadAttention) else self.m(x)
                return out[0] if isinstance(out, tuple) else out

        shape = (2, 4, 4) if isinstance(m, nn.Upsample) else (3, 4)
        with pytest.raises(UnsupportedOperation, match=match):
            graph_of(Net().eval(), shape)


def test_supported_list_is_derived_from_the_rule_tables():
    for name in ("MultiheadAttention", "LayerNorm", "softmax", "matmul", "sin", "ConvTranspose2d"):
        assert name in SUPPORTED
    assert SUPPORTED == sorted(SUPPORTED)

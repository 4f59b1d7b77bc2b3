"""Attention with constant masks (bounds/masks.py, the masked softmax of ops/softmax.py): every
mask kind of scaled_dot_product_attention, nn.MultiheadAttention and the encoder layers computes
what the module computes, its bounds contain 10^4 samples and a PGD attack per output (Linf and
L2, float64 and float32, IBP / CROWN / alpha-CROWN), a 2-token causal attention by hand, and what
cannot be expressed is refused in one line."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.bounds import compute_bounds, masks
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import Bounds
from robustlab.bounds.ops.softmax import Softmax
from robustlab.errors import UnsupportedOperation
from robustlab.threat import Box, LpBall

from .mask_nets import CAUSAL, MASK_NETS, PADDING, PATTERN, L, Layer, Mha, Sdpa, for_batch, make


def graph_forward(model, x):
    graph = graph_of(model, tuple(x.shape[1:]))
    values = [x]
    for node in graph.nodes[1:]:
        values.append(node.op.forward(*[values[j] for j in node.inputs]))
    return values[-1]


@pytest.mark.parametrize("name", list(MASK_NETS))
def test_expansion_computes_what_the_module_computes(name):
    net = make(name)
    x = torch.rand(4, L, 4)
    with torch.no_grad():
        want = for_batch(net, len(x))(x).double()
        got = graph_forward(net, x.double())
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5 * (1 + want.abs().max()), rtol=0), name


def _points(net, threat, x0, g):
    """10^4 samples and a PGD maximiser per output and sign, as the bounds take the region: the
    network's float64 outputs there, (points, batch, outputs)."""
    x64 = x0.double()
    pts = threat.sample(x64, 5000, g)
    attacked = []
    run = for_batch(net, len(x0))
    for j in range(run(x0).shape[1]):
        for sign in (1.0, -1.0):
            attack = PGD(steps=20, loss=lambda z, y, j=j, s=sign: s * z[:, j])
            adv = attack(run, x0, torch.zeros(len(x0), dtype=torch.long), threat)
            attacked.append(threat.project(x64, adv.double()))
    pts = torch.cat([pts, torch.stack(attacked)])
    exact = for_batch(net, len(pts) * len(x0)).double()
    with torch.no_grad():
        return exact(pts.flatten(0, 1)).reshape(len(pts), len(x0), -1)


@pytest.mark.parametrize("name", list(MASK_NETS))
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_bounds_contain_sampled_and_attacked_outputs(name, norm):
    net = make(name)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, L, 4, generator=g)
    threat = LpBall(norm, 0.1 if norm == "inf" else 0.2)
    out = _points(net, threat, x0, g)
    scale = 1e-9 * (1 + out.abs().amax())
    for dtype in (torch.float64, torch.float32):
        for method in ("ibp", "crown", "alpha-crown"):
            b = compute_bounds(net, (threat, x0), method, dtype=dtype, alpha_iterations=5)
            lo, hi = (t.double().reshape(len(x0), -1) for t in (b.lower, b.upper))
            assert (lo <= hi).all() and torch.isfinite(lo).all() and torch.isfinite(hi).all()
            tol = scale if dtype == torch.float64 else 0.0  # float32: rigorous
            assert (out >= lo - tol).all(), (method, dtype, float((lo - out).max()))
            assert (out <= hi + tol).all(), (method, dtype, float((out - hi).max()))


class TwoTokens(nn.Module):
    """Causal self-attention of 2 tokens of width 1 with q = k = v = x (scale 1)."""

    def __init__(self, is_causal=True):
        super().__init__()
        self.is_causal = is_causal

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x, is_causal=self.is_causal).flatten(1)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_two_token_causal_attention_by_hand(method):
    """Token 0 in [a, b] = [0.5, 1], token 1 fixed at 0. Token 0 sees only itself: out_0 = x_0,
    in [0.5, 1] exactly (without the mask it would be e^{x0^2} x0 / (e^{x0^2} + 1) <= 0.74).
    Token 1 sees both with scores x1 x0 = 0 and x1^2 = 0: weights 1/2 each, out_1 = x0 / 2 in
    [0.25, 0.5]."""
    lo = torch.tensor([[[0.5], [0.0]]], dtype=torch.float64)
    hi = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
    b = compute_bounds(TwoTokens(), Box(lo, hi), method)
    got = torch.stack([b.lower.reshape(-1), b.upper.reshape(-1)], 1)
    want = torch.tensor([[0.5, 1.0], [0.25, 0.5]], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12, rtol=0), got
    unmasked = compute_bounds(TwoTokens(False), Box(lo, hi), method)
    assert float(unmasked.upper.reshape(-1)[0]) < 0.75  # the mask changes the answer


def test_masked_softmax_lines_contain_samples_and_ignore_masked_inputs():
    """Softmax(keep) on random boxes: masked entries are exactly 0 whatever their input bounds
    (infinite or nan included), and the lines hold for 10^4 samples of the kept entries."""
    g = torch.Generator().manual_seed(0)
    keep = torch.tensor([[True, False, True, True], [False, False, True, False]])
    op = Softmax(1, keep)
    for scale in (1e-9, 0.3, 4.0, 40.0):
        c = torch.randn(2, 2, 4, generator=g, dtype=torch.float64) * 3
        r = torch.rand(2, 2, 4, generator=g, dtype=torch.float64) * scale
        lo, hi = c - r, c + r
        lo, hi = lo.masked_fill(~keep, float("-inf")), hi.masked_fill(~keep, float("nan"))
        b = Bounds(lo, hi)
        ib = op.ibp(b)
        assert (ib.lower[:, ~keep] == 0).all() and (ib.upper[:, ~keep] == 0).all()
        n = 8
        eye = torch.eye(n, dtype=torch.float64).reshape(n, 2, 4).expand(2, n, 2, 4)
        (a,), bias = op.backward(torch.cat([eye, -eye], 1), b, [(2, 4)])
        assert torch.isfinite(a).all() and torch.isfinite(bias).all()
        assert (a[..., ~keep] == 0).all()
        x = c + r * (2 * torch.rand(10_000, 2, 2, 4, generator=g, dtype=torch.float64) - 1)
        y = torch.softmax(x.masked_fill(~keep, float("-inf")), -1)
        assert (y >= ib.lower - 1e-12).all() and (y <= ib.upper + 1e-12).all()
        xk = x.masked_fill(~keep, 0.0)  # the lines' coefficients there are 0
        lines = (a.flatten(2)[None] * xk.flatten(2)[:, :, None]).sum(-1) + bias
        vals = torch.cat([y.flatten(2), -y.flatten(2)], -1)
        assert (vals >= lines - 1e-10).all()


def _refused(net, match, shape=(L, 4)):
    with pytest.raises(UnsupportedOperation, match=match) as e:
        graph_of(net.eval(), shape)
    assert "\n" not in str(e.value)


class Relu(nn.Module):
    def forward(self, x):
        s = x @ x.transpose(-1, -2)
        return torch.relu(s.masked_fill(~PATTERN, float("-inf"))).flatten(1)


class LogSoftmax(nn.Module):
    def forward(self, x):
        s = x @ x.transpose(-1, -2)
        return torch.log_softmax(s.masked_fill(~PATTERN, float("-inf")), -1).flatten(1)


class FromInput(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x, attn_mask=x @ x.transpose(-1, -2))


def test_what_cannot_be_expressed_is_refused_in_one_line():
    empty = PATTERN.clone()
    empty[1] = False
    _refused(Sdpa(empty), "every entry of softmax row")
    _refused(Mha(padding=torch.ones(1, L, dtype=torch.bool)), "every entry of softmax row")
    _refused(Mha(~PATTERN, is_causal=True), "not the causal mask")
    _refused(Mha(is_causal=True), "no attn_mask")
    _refused(Sdpa(torch.tensor([[0.0, float("inf"), 0.0]] * 3)), r"\+inf or nan")
    _refused(Relu(), "only a softmax takes them")
    _refused(LogSoftmax(), "log_softmax at node 'log_softmax' on scores with -inf entries")
    _refused(FromInput(), "input-dependent mask")
    nested = Layer(padding=PADDING.clone(), stack=True)
    nested.m.use_nested_tensor = True
    _refused(nested, "enable_nested_tensor")


class PerSample(nn.Module):
    """A padding mask with a different row per sample (the example batch has 2 samples)."""

    def __init__(self, rows):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.register_buffer("kpm", rows)

    def forward(self, x):
        return self.attn(x, x, x, key_padding_mask=self.kpm, need_weights=False)[0].flatten(1)


def test_masks_must_be_the_same_for_every_sample():
    """The graph is built on an example batch of 2: a padding mask of batch 1 serves every
    sample, one of batch 2 must have equal rows, another batch size fails in PyTorch itself."""
    _refused(PerSample(torch.tensor([[False, False, True], [False, True, True]])), "differs across")
    _refused(PerSample(torch.zeros(3, L, dtype=torch.bool)), "fails on a batch of 2")
    torch.manual_seed(0)
    one = PerSample(torch.tensor([[False, False, True]])).eval()
    torch.manual_seed(0)
    same = PerSample(torch.tensor([[False, False, True], [False, False, True]])).eval()
    x = torch.rand(2, L, 4)
    with torch.no_grad():
        want = same(x).double()
        for net in (one, same):
            got = graph_forward(net, x.double())
            assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_causal_is_the_top_left_triangle():
    """is_causal on SDPA and a causal attn_mask on MultiheadAttention (True: not allowed) mask
    the same scores: query i takes keys 0..i."""
    m = masks.sdpa(None, True, (2, L, L), 4, "x")
    assert torch.equal(m.keep[0], CAUSAL) and torch.equal(m.keep[1], CAUSAL)
    m = masks.multihead(~CAUSAL, None, True, 2, (2, L, L), "x")
    assert torch.equal(m.keep[1], CAUSAL) and not m.shift.any()


@pytest.mark.parametrize(
    "name", ["sdpa-float", "add", "where", "mha-padding-float", "layer-causal"]
)
def test_float32_bounds_contain_exact_outputs_where_rounding_dominates(name):
    """Inputs near 1000 with a width of 1e-3 (the first projection's bias brings them back):
    float32 rounding exceeds the region's width, yet float32 bounds contain float64 outputs."""
    net = make(name, 4)
    first = next(m for m in net.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.bias -= 1000.0 * first.weight.sum(1)
    g = torch.Generator().manual_seed(4)
    lo = 1000.0 + torch.rand(1, L, 4, generator=g)
    hi = lo + 1e-3
    pts = lo.double() + (hi - lo).double() * torch.rand(3000, L, 4, generator=g).double()
    pts = torch.cat([pts, lo.double(), hi.double()])
    with torch.no_grad():
        out = for_batch(net, len(pts)).double()(pts)
    for method in ("ibp", "crown", "alpha-crown"):
        b = compute_bounds(net, Box(lo, hi), method, dtype=torch.float32, alpha_iterations=5)
        assert b.lower.dtype == torch.float32
        assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all(), method

"""Small attention networks with every kind of constant mask (bounds/masks.py), on inputs of 3
tokens of width 4; each returns (batch, 12). Masks are buffers, so ``.double()`` converts the
float ones with the weights."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

L, E = 3, 4
INF = float("-inf")
CAUSAL = torch.ones(L, L, dtype=torch.bool).tril()  # True: takes part (SDPA's convention)
PATTERN = torch.tensor([[True, False, True], [False, True, False], [True, True, True]])
ADDITIVE = torch.tensor([[0.0, INF, 0.5], [-1.0, 0.0, INF], [0.3, 0.0, -0.2]])
PADDING = torch.tensor([[False, False, True]])  # True: a padded key (MultiheadAttention's)


class Sdpa(nn.Module):
    """Projections, then ``scaled_dot_product_attention`` with ``attn_mask`` or ``is_causal``;
    ``heads``: 2 heads of width 2 with a (1, 2, L, L) mask, one pattern per head."""

    def __init__(self, mask=None, is_causal=False, heads=False):
        super().__init__()
        self.proj = nn.Linear(E, 3 * E)
        self.register_buffer("mask", mask)
        self.is_causal, self.heads = is_causal, heads

    def forward(self, x):
        q, k, v = self.proj(x).chunk(3, -1)
        if self.heads:
            q, k, v = (t.unflatten(-1, (2, 2)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, is_causal=self.is_causal)
        return (out.transpose(1, 2) if self.heads else out).flatten(1)


class Mha(nn.Module):
    """``nn.MultiheadAttention`` (2 heads, batch_first) with its masks (a padding mask of batch
    1, an attn_mask (L, L) or (heads, L, L): one for every sample); ``weights``: return the
    attention weights."""

    def __init__(self, attn=None, padding=None, is_causal=False, weights=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, 2, batch_first=True)
        self.register_buffer("am", attn)
        self.register_buffer("kpm", padding)
        self.is_causal, self.weights = is_causal, weights

    def forward(self, x):
        out, w = self.attn(
            x, x, x, key_padding_mask=self.kpm, attn_mask=self.am, is_causal=self.is_causal,
            need_weights=self.weights, average_attn_weights=False,
        )  # fmt: skip
        return (w if self.weights else out).flatten(1)


class Layer(nn.Module):
    """``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` (batch_first) with masks."""

    def __init__(self, mask=None, padding=None, is_causal=False, stack=False, **kw):
        super().__init__()
        layer = nn.TransformerEncoderLayer(E, 2, 8, dropout=0.0, batch_first=True, **kw)
        self.m = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False) if stack else layer
        self.register_buffer("mask", mask)
        self.register_buffer("kpm", padding)
        self.is_causal, self.stack = is_causal, stack

    def forward(self, x):
        kpm = self.kpm
        if self.stack:
            return self.m(x, mask=self.mask, src_key_padding_mask=kpm).flatten(1)
        return self.m(
            x, src_mask=self.mask, src_key_padding_mask=kpm, is_causal=self.is_causal
        ).flatten(1)


class HandWritten(nn.Module):
    """Attention written out: the mask added, filled or selected into the scores."""

    def __init__(self, how):
        super().__init__()
        self.proj = nn.Linear(E, 3 * E)
        self.register_buffer("additive", ADDITIVE.clone())
        self.register_buffer("keep", PATTERN.clone())
        self.how = how

    def forward(self, x):
        q, k, v = self.proj(x).chunk(3, -1)
        s = q @ k.transpose(-1, -2) / 2
        if self.how == "add":
            s = s + self.additive
        elif self.how == "masked_fill":
            s = s.masked_fill(~self.keep, float("-inf"))
        elif self.how == "finfo":  # a large finite negative (no mask: those keys weigh ~0)
            s = s.masked_fill(~self.keep, torch.finfo(torch.float32).min)
        else:
            s = torch.where(self.keep, s, torch.tensor(float("-inf")))
        return (torch.softmax(s, -1) @ v).flatten(1)


def _causal_float():
    return nn.Transformer.generate_square_subsequent_mask(L)


MASK_NETS = {
    "sdpa-causal": lambda: Sdpa(is_causal=True),
    "sdpa-bool": lambda: Sdpa(PATTERN.clone()),
    "sdpa-float": lambda: Sdpa(ADDITIVE.clone()),
    "sdpa-heads": lambda: Sdpa(torch.stack([PATTERN, CAUSAL])[None].clone(), heads=True),
    "mha-bool": lambda: Mha(~PATTERN),
    "mha-float": lambda: Mha(ADDITIVE.clone()),
    "mha-padding": lambda: Mha(padding=PADDING.clone()),
    "mha-padding-float": lambda: Mha(padding=torch.tensor([[0.0, -0.5, INF]])),
    "mha-both-weights": lambda: Mha(~PATTERN, PADDING.clone(), weights=True),
    "mha-causal": lambda: Mha(~CAUSAL, is_causal=True),
    "mha-per-head": lambda: Mha(torch.stack([~PATTERN, ~CAUSAL])),
    "layer-causal": lambda: Layer(_causal_float(), is_causal=True),
    "layer-padding": lambda: Layer(padding=PADDING.clone()),
    "layer-both-norm-first": lambda: Layer(~PATTERN, PADDING.clone(), norm_first=True),
    "encoder": lambda: Layer(~CAUSAL, PADDING.clone(), stack=True),
    "add": lambda: HandWritten("add"),
    "masked-fill": lambda: HandWritten("masked_fill"),
    "where": lambda: HandWritten("where"),
    "finfo-min": lambda: HandWritten("finfo"),
}


def for_batch(net: nn.Module, n: int) -> nn.Module:
    """A copy of ``net`` that runs in PyTorch on a batch of ``n``: its masks of batch 1 repeated
    (the bound graph applies them to every sample; PyTorch wants one per sample)."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, (Mha, Layer)) and m.kpm is not None and m.kpm.shape[0] == 1:
            m.kpm = m.kpm.expand(n, -1)
        if isinstance(m, Mha) and m.am is not None and m.am.dim() == 3:
            m.am = m.am.repeat(n, 1, 1)
    return net


def make(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MASK_NETS[name]().eval()

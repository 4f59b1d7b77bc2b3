"""Operations that the bound graph expands into primitive ones: softmax and log-softmax, layer
normalisation, scaled dot-product attention, ``nn.MultiheadAttention`` and transformer encoder
layers, with their constant masks (``masks.py``). Each expansion computes what the module
computes, in exact arithmetic; tests compare them with the modules' forward passes.

``emit(op, inputs, name)`` appends a graph node and returns its value (a ``rules.Var``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustlab.bounds import masks
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.bilinear import MatMul, Mul
from robustlab.bounds.ops.linear import Add, Linear, Reshape
from robustlab.bounds.ops.nonlinear import GELU, Exp, Log, Pow
from robustlab.bounds.ops.select import select
from robustlab.bounds.ops.shape import (
    Center,
    MatMulConst,
    PairDiff,
    ScaleShift,
    per_sample,
)
from robustlab.bounds.ops.softmax import Softmax, check_keep
from robustlab.errors import UnsupportedOperation

# log-softmax as -log(1 + sum exp(x_j - x_i)) while its differences number at most this many per
# sample (n (n - 1) per row: n^2 differences to bound instead of n inputs; above, the direct
# form x - log sum exp(x))
PAIRWISE_MAX = 4096


def _is_var(v) -> bool:
    return hasattr(v, "example")


def shape_fn(emit, x, fn, name: str):
    """A per-sample shape function of x (transpose, movedim, sum, ...) as a graph node."""
    return emit(select(fn, x.example, name), [x], name)


def reduce(emit, x, dims: tuple[int, ...], mean: bool, name: str, keepdim: bool = True):
    """Sum or mean over per-sample dims (0 = first after the batch)."""
    d = tuple(i + 1 for i in dims)
    n = math.prod(x.example.shape[i] for i in d)

    def fn(t):
        return t.mean(d, keepdim=keepdim) if mean else t.sum(d, keepdim=keepdim)

    return emit(per_sample(fn, x.example, name, terms=n + 2), [x], name)


def softmax(
    emit, x, dim: int, log: bool = False, name: str = "softmax", keep: Tensor | None = None
):
    """softmax along per-sample ``dim`` as one operation relaxed jointly in its row
    (``ops.softmax``: the LSE bounds of Wei et al. 2023; on VNN-COMP 2023's vit, CROWN's margin
    0.242 against 0.170 with the pairwise form below). log-softmax as ``-log(1 + sum_{j != i}
    exp(x_j - x_i))`` (the differences are linear in x, so CROWN bounds them tightly) up to
    ``PAIRWISE_MAX`` differences, else as ``x - log(sum exp(x))`` (Shi et al. 2020). ``keep``
    (bool, the per-sample shape): the softmax over each row's kept entries (0 elsewhere)."""
    n = x.example.shape[dim + 1]
    last = x.example.dim() - 2
    if keep is not None:
        check_keep(keep, dim, f"softmax at node '{name}'")
        if log and not bool(keep.all()):
            raise UnsupportedOperation(f"log_softmax of masked entries (-inf) at node '{name}'")
        keep = None if bool(keep.all()) else keep
    if n == 1:  # a single entry: 1 (log: 0)
        return emit(ScaleShift(0.0, 0.0 if log else 1.0), [x], name)
    if not log:
        return emit(Softmax(dim, keep), [x], name)
    if x.example[0].numel() * (n - 1) > PAIRWISE_MAX:
        e = emit(Exp(), [x], f"{name}.exp")
        s = reduce(emit, e, (dim,), False, f"{name}.sum")
        return emit(Add(-1.0), [x, emit(Log(), [s], f"{name}.log")], name)
    d = emit(PairDiff(dim, n), [x], f"{name}.pairs")  # (..., n, n - 1)
    e = emit(Exp(), [d], f"{name}.exp")
    s = reduce(emit, e, (last + 1,), False, f"{name}.sum", keepdim=False)  # (..., n)
    s = emit(ScaleShift(1.0, 1.0), [s], f"{name}.denominator")
    y = emit(Log(), [s], f"{name}.log")
    y = emit(ScaleShift(-1.0, 0.0), [y], f"{name}.neg")
    if dim != last:
        y = shape_fn(emit, y, lambda t: t.movedim(-1, dim + 1), f"{name}.movedim")
    return y


def layer_norm(emit, x, normalized_shape, weight, bias, eps: float, name: str = "layer_norm"):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last ``len(normalized_shape)``
    dims: centring (linear), square, mean, rsqrt, a product, an affine map (as auto_LiRPA)."""
    k = len(tuple(normalized_shape))
    nd = x.example.dim() - 1
    dims = tuple(range(nd - k, nd))
    c = emit(Center(dims), [x], f"{name}.center")
    sq = emit(Pow(2.0, "square"), [c], f"{name}.square")
    var = reduce(emit, sq, dims, True, f"{name}.var")
    var = emit(ScaleShift(1.0, float(eps)), [var], f"{name}.var_eps")
    r = emit(Pow(-0.5, "rsqrt"), [var], f"{name}.rsqrt")
    y = emit(Mul(), [c, r], f"{name}.normalized")
    if weight is None and bias is None:
        return y
    scale = 1.0 if weight is None else weight.detach().double()
    shift = 0.0 if bias is None else bias.detach().double()
    return emit(ScaleShift(scale, shift), [y], name)


def matmul(emit, a, b, name: str):
    """``a @ b``: a product of two input-dependent tensors, or a linear map when one is constant."""
    if _is_var(a) and _is_var(b):
        if a.example.dim() != b.example.dim():
            raise UnsupportedOperation(f"matmul of operands of different ranks at node '{name}'")
        return emit(MatMul(), [a, b], name)
    if _is_var(a):
        w = b.detach()
        if w.dim() == 2:
            return emit(Linear(w.t().contiguous(), None), [a], name)
        return emit(MatMulConst(_sample(w, a, name)), [a], name)
    return emit(MatMulConst(_sample(a.detach(), b, name), left=True), [b], name)


def _sample(w: Tensor, x, name: str) -> Tensor:
    """A constant operand as one sample's value (a leading batch dim of 1 dropped)."""
    if w.dim() == x.example.dim() and w.shape[0] == 1:
        return w[0]
    if w.dim() >= x.example.dim():
        raise UnsupportedOperation(f"matmul with a batched constant at node '{name}'")
    return w


def transpose_last(emit, x, name: str):
    if not _is_var(x):
        return x.transpose(-1, -2)
    return shape_fn(emit, x, lambda t: t.transpose(-1, -2), name)


Masking = Callable[[tuple[int, ...], int], "masks.ScoreMask | None"]


def attention(emit, q, k, v, scale: float | None, mask: Masking | None = None, name="attention"):
    """``softmax(q k^T * scale + mask) v`` (``F.scaled_dot_product_attention`` without dropout);
    ``mask(shape, rank)``: the constant mask on scores of per-sample ``shape`` (``masks.py``);
    masked scores leave their query's softmax."""
    d = q.example.shape[-1] if _is_var(q) else q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    scores = matmul(emit, q, transpose_last(emit, k, f"{name}.kt"), f"{name}.scores")
    m = None if mask is None else mask(tuple(scores.example.shape[1:]), scores.example.dim())
    shift, keep = (0.0, None) if m is None else (m.shift, m.keep)
    scores = emit(ScaleShift(scale, shift), [scores], f"{name}.scaled")
    p = softmax(emit, scores, scores.example.dim() - 2, name=f"{name}.softmax", keep=keep)
    return matmul(emit, p, v, f"{name}.out"), p


def multihead_attention(
    emit,
    m: nn.MultiheadAttention,
    query,
    key,
    value,
    need_weights: bool,
    average: bool,
    name,
    attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
):
    """``nn.MultiheadAttention`` (batch_first, no bias_k / bias_v / zero attention), with its
    constant masks in its conventions (``masks.multihead``)."""
    if not m.batch_first:
        raise UnsupportedOperation(
            f"MultiheadAttention with batch_first=False at node '{name}' (bounds need the batch first)"
        )
    if m.bias_k is not None or m.add_zero_attn or (m.training and m.dropout > 0):
        raise UnsupportedOperation(
            f"MultiheadAttention with bias_k / add_zero_attn / training dropout at '{name}'"
        )
    E, H = m.embed_dim, m.num_heads
    hd = E // H
    if m._qkv_same_embed_dim:
        ws = m.in_proj_weight.detach().chunk(3)
    else:
        ws = (m.q_proj_weight.detach(), m.k_proj_weight.detach(), m.v_proj_weight.detach())
    bs = (None,) * 3 if m.in_proj_bias is None else m.in_proj_bias.detach().chunk(3)
    heads = []
    for tag, x, w, b in zip("qkv", (query, key, value), ws, bs, strict=True):
        if not _is_var(x):
            raise UnsupportedOperation(f"MultiheadAttention with a constant {tag} at '{name}'")
        h = emit(Linear(w, b), [x], f"{name}.{tag}")
        L = h.example.shape[1]
        h = emit(Reshape((L, H, hd)), [h], f"{name}.{tag}_heads")
        heads.append(shape_fn(emit, h, lambda t: t.transpose(1, 2), f"{name}.{tag}_t"))

    def mask(shape, rank):
        return masks.multihead(attn_mask, key_padding_mask, is_causal, H, shape, f"'{name}'")

    out, p = attention(emit, *heads, None, mask, name)
    out = shape_fn(emit, out, lambda t: t.transpose(1, 2), f"{name}.merge")
    out = emit(Reshape((out.example.shape[1], E)), [out], f"{name}.concat")
    ow, ob = m.out_proj.weight.detach(), m.out_proj.bias
    out = emit(Linear(ow, None if ob is None else ob.detach()), [out], name)
    if not need_weights:
        return out, None
    if average:
        p = reduce(emit, p, (0,), True, f"{name}.weights", keepdim=False)
    return out, p


def _activation(act, name: str):
    if act in (nn.functional.relu, torch.relu) or isinstance(act, nn.ReLU):
        return ReLU()
    if act is nn.functional.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return GELU()
    raise UnsupportedOperation(f"encoder layer activation {act!r} at '{name}' (relu or gelu)")


def encoder_layer(
    emit, m: nn.TransformerEncoderLayer, x, name: str, mask=None, padding=None, causal=False
):
    """``nn.TransformerEncoderLayer``: self-attention (``src_mask``, ``src_key_padding_mask``,
    ``is_causal`` as its masks) and a two-layer perceptron, each with a residual connection and
    layer normalisation (before: ``norm_first``, or after)."""

    def norm(ln, h, tag):
        return layer_norm(emit, h, ln.normalized_shape, ln.weight, ln.bias, ln.eps, f"{name}.{tag}")

    def sa(h):
        at = f"{name}.self_attn"
        out, _ = multihead_attention(
            emit, m.self_attn, h, h, h, False, True, at, mask, padding, causal
        )
        return out

    def ff(h):
        h = emit(Linear(m.linear1.weight, m.linear1.bias), [h], f"{name}.linear1")
        h = emit(_activation(m.activation, name), [h], f"{name}.activation")
        return emit(Linear(m.linear2.weight, m.linear2.bias), [h], f"{name}.linear2")

    if m.norm_first:
        x = emit(Add(1.0), [x, sa(norm(m.norm1, x, "norm1"))], f"{name}.residual1")
        return emit(Add(1.0), [x, ff(norm(m.norm2, x, "norm2"))], f"{name}.residual2")
    x = norm(m.norm1, emit(Add(1.0), [x, sa(x)], f"{name}.residual1"), "norm1")
    return norm(m.norm2, emit(Add(1.0), [x, ff(x)], f"{name}.residual2"), "norm2")


def encoder(emit, m: nn.TransformerEncoder, x, name: str, mask=None, padding=None, causal=False):
    """``nn.TransformerEncoder``: its layers in turn (each with the masks), then its final norm."""
    for k, layer in enumerate(m.layers):
        x = encoder_layer(emit, layer, x, f"{name}.layers.{k}", mask, padding, causal)
    if m.norm is not None:
        n = m.norm
        x = layer_norm(emit, x, n.normalized_shape, n.weight, n.bias, n.eps, f"{name}.norm")
    return x

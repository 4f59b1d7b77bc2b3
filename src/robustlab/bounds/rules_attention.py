"""Bound rules for attention and masked scores (fx calls folded into graph operations, as in
``rules.py``): softmax, ``scaled_dot_product_attention``, ``nn.MultiheadAttention`` and the
encoder layers with constant masks (``masks.py``), and scores into which a constant ``-inf`` is
added, filled or selected (``Masked``: what exported and hand-written attention does), which
only a softmax takes: the softmax over the kept entries."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustlab.bounds import composite, masks
from robustlab.bounds.ops.shape import ScaleShift
from robustlab.bounds.rules import Call, Var, is_var, per_sample_dims
from robustlab.bounds.rules import where as _where

# the fx rules (keys of graph._CALLS) that take masked scores and keep them exact
MASKED_CALLS = frozenset({"add", "sub", "where", "masked_fill", "softmax", "identity", "dropout"})


class Masked(Var):
    """Scores with ``-inf`` at fixed places (a constant mask added, filled or selected in, as
    exported attention does): the finite values are node ``inner``, the places kept ``keep``
    (per sample). Only a softmax takes them (``MASKED_CALLS``): the softmax over kept entries."""

    def __init__(self, inner: Var, keep: Tensor, example: Tensor) -> None:
        super().__init__(inner.index, example)
        self.inner, self.keep = inner, keep


def softmax(log: bool) -> Callable[[Call], Var]:
    def rule(call: Call) -> Var:
        x = call.args[0]
        (dim,) = per_sample_dims(call, call.arg(1, "dim"), x.example.dim())
        return _softmax(call, x, dim, log)

    return rule


def softmax_module(call: Call, m: nn.Module) -> Var:
    x = call.vars[0]
    (dim,) = per_sample_dims(call, m.dim, x.example.dim())
    return _softmax(call, x, dim, isinstance(m, nn.LogSoftmax))


def _softmax(call: Call, x: Var, dim: int, log: bool) -> Var:
    if isinstance(x, Masked):  # the softmax over the kept entries of masked scores
        return composite.softmax(call.emit, x.inner, dim, log, call.name, keep=x.keep)
    return composite.softmax(call.emit, x, dim, log, call.name)


def where(call: Call) -> Var:
    """``torch.where`` with a constant condition; ``-inf`` selected into scores (or masked scores
    selected from) makes masked scores."""
    cond, a, b = call.args[0], call.args[1], call.args[2]
    if is_var(cond) or not masking(a, b):
        return _where(call)
    x, c = (a, b) if is_var(a) else (b, a)
    if is_var(c):
        raise call.unsupported("where of two input-dependent operands with -inf entries")
    take_c = torch.as_tensor(cond).bool()
    take_c = ~take_c if x is a else take_c
    c = torch.as_tensor(c).double()
    return masked_affine(call, x, torch.where(take_c, 0.0, 1.0), torch.where(take_c, c, 0.0))


def masked_fill(call: Call) -> Var:
    """``x.masked_fill(mask, value)`` for a constant mask: ``where(mask, value, x)``."""
    x, mask, value = call.args[0], call.arg(1, "mask"), call.arg(2, "value")
    if not is_var(x) or is_var(mask) or is_var(value):
        raise call.unsupported("masked_fill with an input-dependent mask or value")
    take_c = torch.as_tensor(mask).bool()
    c = torch.as_tensor(value).double()
    return masked_affine(call, x, torch.where(take_c, 0.0, 1.0), torch.where(take_c, c, 0.0))


def masking(*args) -> bool:
    """Whether an operand is masked scores or a constant with infinite entries."""
    for a in args:
        if isinstance(a, Masked):
            return True
        if isinstance(a, (Tensor, float)) and not bool(torch.isfinite(torch.as_tensor(a)).all()):
            return True
    return False


def masked_shift(call: Call, sign: float) -> Var:
    """``x + c`` / ``x - c`` where ``x`` is (masked) scores and ``c`` a constant that may hold
    ``-inf`` (an additive attention mask)."""
    a, b = call.args
    if is_var(a) and is_var(b):
        raise call.unsupported("a sum of two input-dependent operands with -inf entries")
    if not is_var(a) and sign < 0:
        raise call.unsupported("a constant minus scores with -inf entries")
    x, c = (a, b) if is_var(a) else (b, a)
    return masked_affine(call, x, torch.ones(()), sign * torch.as_tensor(c).double())


def masked_affine(call: Call, x: Var, scale: Tensor, shift: Tensor) -> Var:
    """``scale * x + shift`` (scale 0 or 1, constants) where ``shift`` or ``x`` holds ``-inf``:
    the finite part as a graph node and the ``-inf`` places as a mask (``Masked``); +inf or nan
    is refused. One mask for every sample: constants with a batch dimension need equal rows."""
    full = tuple(call.out.shape)
    if tuple(x.example.shape) != full:
        raise call.unsupported("a mask that broadcasts the scores")
    if bool(torch.isnan(shift).any()) or bool(torch.isposinf(shift).any()):
        raise call.unsupported("a mask with +inf or nan entries (only -inf masks a score)")
    what = f"the mask at node '{call.name}'"
    scale, shift = (
        masks.as_sample(t, full[1:], t.dim() == len(full), what) for t in (scale, shift)
    )
    inner, keep = (x.inner, x.keep) if isinstance(x, Masked) else (x, torch.ones(full[1:]) > 0)
    keep = torch.where(scale == 0, ~torch.isneginf(shift), keep & ~torch.isneginf(shift))
    finite = torch.where(torch.isneginf(shift), 0.0, shift)
    if not (bool((scale == 1).all()) and not bool(finite.any())):
        inner = call.emit(ScaleShift(scale.contiguous(), finite.contiguous()), [inner])
    return inner if bool(keep.all()) else Masked(inner, keep, call.out)


def _constant_masks(call: Call, what: str, *found) -> None:
    if any(is_var(t) for t in found):
        raise call.unsupported(f"{what} with an input-dependent mask")


def attention(call: Call) -> Var:
    """``F.scaled_dot_product_attention`` with a constant ``attn_mask`` (bool: True takes part;
    float: added) or ``is_causal``."""
    q, k, v = call.args[:3]
    mask = call.arg(3, "attn_mask")
    if call.arg(4, "dropout_p", 0.0) or call.arg(7, "enable_gqa", False):
        raise call.unsupported("scaled_dot_product_attention with dropout or enable_gqa")
    _constant_masks(call, "scaled_dot_product_attention", mask)
    causal = bool(call.arg(5, "is_causal", False))
    what = f"scaled_dot_product_attention at node '{call.name}'"

    def mask_of(shape, rank):
        return masks.sdpa(mask, causal, shape, rank, what)

    out, _ = composite.attention(call.emit, q, k, v, call.arg(6, "scale"), mask_of, call.name)
    return out


# per module: the (position, name) of its arguments that are per-sample masks, batch first
_BATCHED_MASKS = {
    nn.MultiheadAttention: ((3, "key_padding_mask"), (5, "attn_mask")),
    nn.TransformerEncoderLayer: ((1, "src_mask"), (2, "src_key_padding_mask")),
    nn.TransformerEncoder: ((1, "mask"), (2, "src_key_padding_mask")),
}


def one_mask_for_every_sample(m: nn.Module, args: tuple, kwargs: dict, batch: int):
    """The concrete arguments of a call of ``m`` with its masks of batch 1 repeated to
    ``batch`` (the graph is built on an example batch; bounds apply one mask to every sample):
    key padding masks (1, S), and attention masks (heads, L, S) that PyTorch takes per batch and
    head (batch * heads, L, S)."""
    spec = _BATCHED_MASKS.get(type(m))
    if spec is None:
        return args, kwargs
    args, kwargs = list(args), dict(kwargs)
    heads = m.num_heads if isinstance(m, nn.MultiheadAttention) else None
    if heads is None:
        heads = (
            m if isinstance(m, nn.TransformerEncoderLayer) else m.layers[0]
        ).self_attn.num_heads
    for pos, name in spec:
        inside = len(args) > pos
        t = args[pos] if inside else kwargs.get(name)
        if not isinstance(t, Tensor) or t.dim() < 2:
            continue
        if t.dim() == 2 and "padding" in name and t.shape[0] == 1:
            t = t.expand(batch, -1)
        elif t.dim() == 3 and t.shape[0] == heads:
            t = t.repeat(batch, 1, 1)
        else:
            continue
        if inside:
            args[pos] = t
        else:
            kwargs[name] = t
    return tuple(args), kwargs


def multihead_module(call: Call, m: nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with constant ``attn_mask`` / ``key_padding_mask`` (bool: True
    is NOT allowed; float: added) and the ``is_causal`` hint."""
    q = call.arg(0, "query")
    k, v = call.arg(1, "key"), call.arg(2, "value")
    padding, attn = call.arg(3, "key_padding_mask"), call.arg(5, "attn_mask")
    _constant_masks(call, "MultiheadAttention", padding, attn)
    need = bool(call.arg(4, "need_weights", True))
    avg = bool(call.arg(6, "average_attn_weights", True))
    causal = bool(call.arg(7, "is_causal", False))
    return composite.multihead_attention(
        call.emit, m, q, k, v, need, avg, call.name, attn, padding, causal
    )


def encoder_module(call: Call, m: nn.Module) -> Var:
    """``nn.TransformerEncoderLayer`` (src, src_mask, src_key_padding_mask, is_causal) and
    ``nn.TransformerEncoder`` (src, mask, src_key_padding_mask, is_causal) with constant masks."""
    layer = isinstance(m, nn.TransformerEncoderLayer)
    mask = call.arg(1, "src_mask" if layer else "mask")
    padding = call.arg(2, "src_key_padding_mask")
    causal = bool(call.arg(3, "is_causal", False))  # a hint: checked against the mask
    name = type(m).__name__
    _constant_masks(call, name, mask, padding)
    if padding is not None and not layer and getattr(m, "use_nested_tensor", False):
        raise call.unsupported(
            f"{name} with src_key_padding_mask and enable_nested_tensor=True (its output at padded "
            "places is 0 without gradients and computed with them; build it with "
            "enable_nested_tensor=False)"
        )
    x = call.vars[0]
    if layer:
        return composite.encoder_layer(call.emit, m, x, call.name, mask, padding, causal)
    return composite.encoder(call.emit, m, x, call.name, mask, padding, causal)

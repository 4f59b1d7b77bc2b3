"""Constant attention masks as the bound graph takes them: per sample, which scores take part in
each query's softmax (``keep``) and what is added to them (``shift``, float64, 0 where masked).

PyTorch's conventions, per API (each checked against its forward pass in the tests):
``scaled_dot_product_attention``: a boolean ``attn_mask`` is True where a key TAKES part, a float
one is added (``-inf``: masked), ``is_causal``: ``ones(L, S).tril()``; ``nn.MultiheadAttention``
(and the encoder layers): boolean ``attn_mask`` / ``key_padding_mask`` are True where a key is NOT
allowed, float ones are added, and the two are summed. Masked scores never enter the softmax's
relaxation as numbers (``ops/softmax.py``: the softmax over the kept keys). Bounds are per region
and one graph serves every region, so a mask with a batch dimension needs one row, or the same
row for every sample; a mask that depends on the input is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.errors import UnsupportedOperation


@dataclass(frozen=True)
class ScoreMask:
    """``keep`` (bool) and ``shift`` (float64) on one sample's scores, shape (..., L, S)."""

    keep: Tensor
    shift: Tensor

    def __and__(self, other: ScoreMask) -> ScoreMask:
        """Both masks (PyTorch sums additive masks: ``-inf`` wins)."""
        keep = self.keep & other.keep
        return ScoreMask(keep, torch.where(keep, self.shift + other.shift, 0.0))


def as_sample(m: Tensor, shape: tuple[int, ...], batched: bool, what: str) -> Tensor:
    """A mask broadcast to one sample's ``shape``: ``batched`` when its first dim is the batch
    (then 1, or the same row for every sample)."""
    if batched:
        if m.shape[0] != 1 and not bool((m == m[:1]).all()):
            raise UnsupportedOperation(
                f"{what} differs across the batch (bounds are per region: one mask for every "
                "sample, with a batch dimension of 1 or identical rows)"
            )
        m = m[0]
    try:
        return m.broadcast_to(shape).contiguous()
    except RuntimeError:
        raise UnsupportedOperation(
            f"{what} of shape {tuple(m.shape)} does not broadcast to the scores {shape}"
        ) from None


def additive(m: Tensor, what: str) -> ScoreMask:
    """A float mask added to the scores: ``-inf`` masks a score; ``+inf`` or nan is refused."""
    m = m.detach()
    if bool(torch.isnan(m).any()) or bool(torch.isposinf(m).any()):
        raise UnsupportedOperation(f"{what} with +inf or nan entries (only -inf masks a score)")
    keep = ~torch.isneginf(m)
    return ScoreMask(keep, torch.where(keep, m.double(), 0.0))


def from_mask(m: Tensor, true_takes_part: bool, what: str) -> ScoreMask:
    """A boolean mask in the API's convention, or a float (additive) one."""
    if m.dtype == torch.bool:
        keep = m if true_takes_part else ~m
        return ScoreMask(keep, torch.zeros(keep.shape, dtype=torch.float64))
    if not m.is_floating_point():
        raise UnsupportedOperation(f"{what} of dtype {m.dtype} (bool or float)")
    return additive(m, what)


def on_sample(mask: ScoreMask, shape: tuple[int, ...], batched: bool, what: str) -> ScoreMask:
    return ScoreMask(
        as_sample(mask.keep, shape, batched, what), as_sample(mask.shift, shape, batched, what)
    )


def causal(shape: tuple[int, ...]) -> ScoreMask:
    """``is_causal`` (top-left aligned, as PyTorch): query i takes keys 0..i."""
    L, S = shape[-2:]
    keep = torch.ones(L, S, dtype=torch.bool).tril().broadcast_to(shape).contiguous()
    return ScoreMask(keep, torch.zeros(shape, dtype=torch.float64))


def sdpa(attn_mask, is_causal: bool, shape: tuple[int, ...], rank: int, what: str):
    """``scaled_dot_product_attention``'s mask on scores of per-sample ``shape`` (``rank``: the
    scores' dims, batch included); None without one."""
    if attn_mask is not None and is_causal:
        raise UnsupportedOperation(f"{what} with both attn_mask and is_causal")
    if is_causal:
        return causal(shape)
    if attn_mask is None:
        return None
    m = from_mask(attn_mask, True, f"{what}'s attn_mask")
    return on_sample(m, shape, attn_mask.dim() == rank, f"{what}'s attn_mask")


def multihead(attn_mask, key_padding_mask, is_causal: bool, heads: int, shape, what: str):
    """``nn.MultiheadAttention``'s masks on scores of per-sample ``shape`` (heads, L, S):
    ``attn_mask`` (L, S) or (batch * heads, L, S), ``key_padding_mask`` (batch, S); with
    ``is_causal`` (a hint in PyTorch) the attn_mask must be the causal mask."""
    H, L, S = shape
    out = None
    if attn_mask is not None:
        m = from_mask(attn_mask, False, f"{what}'s attn_mask")
        batched = attn_mask.dim() == 3
        if batched:
            if attn_mask.shape[0] % heads:
                raise UnsupportedOperation(f"{what}'s attn_mask of shape {tuple(attn_mask.shape)}")
            m = ScoreMask(*(t.reshape(-1, H, L, S) for t in (m.keep, m.shift)))
        out = on_sample(m, shape, batched, f"{what}'s attn_mask")
        exact = torch.equal(out.keep, causal(shape).keep) and not bool(out.shift.any())
        if is_causal and not exact:
            raise UnsupportedOperation(
                f"{what} with is_causal and an attn_mask that is not the causal mask "
                "(PyTorch then uses either, depending on the path)"
            )
    elif is_causal:
        raise UnsupportedOperation(f"{what} with is_causal but no attn_mask (PyTorch needs it)")
    if key_padding_mask is not None:
        if key_padding_mask.dim() != 2:
            raise UnsupportedOperation(
                f"{what}'s key_padding_mask of shape {tuple(key_padding_mask.shape)} (batch, keys)"
            )
        m = from_mask(key_padding_mask, False, f"{what}'s key_padding_mask")
        m = ScoreMask(*(t[:, None, None, :] for t in (m.keep, m.shift)))
        m = on_sample(m, shape, True, f"{what}'s key_padding_mask")
        out = m if out is None else out & m
    return out

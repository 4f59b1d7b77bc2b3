"""Pruning masks on the Linear / Conv weights: unstructured (single weights) or by output channel
(a conv filter or a linear row, with its bias; never the last layer's, whose outputs are the
classes), chosen layer by layer as the top (1 - sparsity) share of a score; kept fixed during
fine-tuning by zeroing the masked weights' gradients."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import weight_layers

STRUCTURES = ("unstructured", "channel")


def check_sparsity(values) -> list[float]:
    """Target sparsities: numbers in [0, 1), at least one."""
    out = [float(v) for v in values]
    if not out or any(not (0 <= v < 1) for v in out):
        raise RobustlabError(f"sparsity must be numbers in [0, 1); found {list(values)}")
    return out


def check_structure(structure: str) -> str:
    if structure not in STRUCTURES:
        raise RobustlabError(
            f"structure must be one of {', '.join(STRUCTURES)}; found {structure!r}"
        )
    return structure


def prunable(model: nn.Module, structure: str = "unstructured") -> list[tuple[str, nn.Module]]:
    """The layers a structure prunes: every Linear / Conv layer; for channels all but the last."""
    found = weight_layers(model)
    if check_structure(structure) == "channel":
        found = found[:-1]
        if not found:
            raise RobustlabError("channel pruning needs a model with two or more weight layers")
    return found


def score_shape(module: nn.Module, structure: str) -> tuple[int, ...]:
    """One score per weight (unstructured) or per output channel."""
    return tuple(module.weight.shape) if structure == "unstructured" else (module.weight.shape[0],)


def magnitude_scores(weight: Tensor, structure: str) -> Tensor:
    """|w| per weight, or the L1 norm of each output channel (Li et al. 2017, arXiv:1608.08710)."""
    w = weight.detach().abs()
    return w if structure == "unstructured" else w.reshape(w.shape[0], -1).sum(1)


def keep_count(total: int, sparsity: float) -> int:
    """How many of ``total`` entries a layer keeps at ``sparsity`` (at least one)."""
    return max(1, total - math.floor(sparsity * total + 1e-9))


def top_mask(scores: Tensor, sparsity: float) -> Tensor:
    """A 0/1 mask of the scores' shape keeping the largest (1 - sparsity) share."""
    flat = scores.reshape(-1)
    keep = keep_count(flat.numel(), sparsity)
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    return mask.reshape(scores.shape)


def expand(mask: Tensor, module: nn.Module, structure: str) -> tuple[Tensor, Tensor | None]:
    """A layer's score-shaped mask as masks of its weight and bias."""
    w = module.weight
    if structure == "unstructured":
        return mask.to(w.dtype), None
    wm = mask.to(w.dtype).reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
    bm = None if module.bias is None else mask.to(module.bias.dtype).clone()
    return wm, bm


Masks = dict[str, tuple[Tensor, Tensor | None]]  # layer path -> (weight mask, bias mask)


def masks_from_scores(
    model: nn.Module, scores: dict[str, Tensor], sparsity: float, structure: str
) -> Masks:
    """Per layer, the top (1 - sparsity) of its scores (the same sparsity in every layer)."""
    layers = dict(prunable(model, structure))
    return {n: expand(top_mask(s, sparsity), layers[n], structure) for n, s in scores.items()}


def magnitude_masks(model: nn.Module, sparsity: float, structure: str = "unstructured") -> Masks:
    """Layer-wise magnitude pruning (the baseline of Han et al. 2015 and HYDRA's comparisons)."""
    scores = {n: magnitude_scores(m.weight, structure) for n, m in prunable(model, structure)}
    return masks_from_scores(model, scores, sparsity, structure)


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero the masked weights (and the biases of pruned channels) in place."""
    with torch.no_grad():
        for n, (wm, bm) in masks.items():
            m = model.get_submodule(n)
            m.weight.mul_(wm)
            if bm is not None:
                m.bias.mul_(bm)
    return model


@contextlib.contextmanager
def frozen_masks(model: nn.Module, masks: Masks) -> Iterator[nn.Module]:
    """Masked weights zeroed and kept at zero while training inside the block: their gradients
    are zeroed as they are computed (Adam then never moves them), and the masks are applied
    again on the way out."""
    apply_masks(model, masks)
    handles = []
    for n, (wm, bm) in masks.items():
        m = model.get_submodule(n)
        handles.append(m.weight.register_hook(lambda g, wm=wm: g * wm))
        if bm is not None:
            handles.append(m.bias.register_hook(lambda g, bm=bm: g * bm))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        apply_masks(model, masks)


def sparsity_report(model: nn.Module, structure: str = "unstructured") -> dict:
    """The share of zero weights over every Linear / Conv layer and per layer, and the number of
    output channels whose weights are all zero."""
    rows, zeros, total = [], 0, 0
    for n, m in weight_layers(model):
        w = m.weight.detach()
        z = int((w == 0).sum())
        dead = int((w.reshape(w.shape[0], -1) == 0).all(1).sum())
        rows.append({"layer": n, "weights": w.numel(), "sparsity": z / w.numel(),
                     "channels": int(w.shape[0]), "zero_channels": dead})  # fmt: skip
        zeros, total = zeros + z, total + w.numel()
    return {"sparsity": zeros / total, "weights": total, "layers": rows, "structure": structure}

"""Certified training: the robust cross-entropy on differentiable lower bounds of the logit margins,
from interval bounds (IBP, Gowal et al. 2018, arXiv:1810.12715) or from CROWN-IBP (Zhang et al.
2020, arXiv:1906.06316), both computed by robustlab's bound engine with gradients kept."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.bounds import rounding
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ibp import interval_all, spec_bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.errors import RobustlabError


def full_margin_spec(y: Tensor, num_classes: int, like: Tensor) -> Tensor:
    """Rows ``e_y - e_j`` for every class j (the row j = y is zero): shape (N, K, K)."""
    eye = torch.eye(num_classes, dtype=like.dtype, device=like.device)
    return eye[y][:, None, :] - eye[None, :, :]


def check_trainable(model: nn.Module) -> None:
    """Certified training needs a model without BatchNorm (the bound engine folds BatchNorm's
    running statistics into constants)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise RobustlabError(
                f"certified training expects a model without BatchNorm; found {type(m).__name__} "
                f"at '{name}'"
            )


def margin_lower_bounds(
    model: nn.Module,
    lower: Tensor,
    upper: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    beta: float = 0.0,
) -> Tensor:
    """Lower bounds of ``logit[y] - logit[j]`` over the box ``[lower, upper]``, shape (N, K),
    differentiable with respect to the parameters; the entry j = y is 0.

    ``beta`` mixes CROWN-IBP into IBP: ``beta * crown_ibp + (1 - beta) * ibp`` (beta = 0: IBP
    alone, no backward pass). The final linear layer is folded into the specification (the
    "elision" of Gowal et al.).
    """
    with rounding.ignored():  # training bounds prove nothing: no float32 rounding accounting
        return _margins(model, lower, upper, y, num_classes, beta)


def _margins(model, lower, upper, y, num_classes, beta) -> Tensor:
    graph = graph_of(model, tuple(lower.shape[1:]))
    C = full_margin_spec(y, num_classes, lower)
    if beta <= 0:
        inter = dict(enumerate(interval_all(graph, lower, upper)))
        return spec_bounds(graph, inter, C).lower
    # crown() keeps the better of the CROWN-IBP and the interval bound per margin
    final, inter = crown(graph, InputRegion(lower, upper), C, intermediate="ibp", bound_upper=False)
    if beta >= 1:
        return final.lower
    ibp_lower = spec_bounds(graph, inter, C).lower
    return beta * final.lower + (1 - beta) * ibp_lower


def robust_loss(lower_margins: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the worst-case logits ``-lower_margins`` (mean over the batch)."""
    return nn.functional.cross_entropy(-lower_margins, y)


def certified_mask(lower_margins: Tensor, y: Tensor) -> Tensor:
    """Whether every margin other than the true class's own is proven positive."""
    own = nn.functional.one_hot(y, lower_margins.shape[1]).bool()
    return (lower_margins > 0).logical_or(own).all(1)

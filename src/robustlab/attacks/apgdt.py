"""Targeted Auto-PGD on the targeted DLR loss over the top-k classes (Croce & Hein 2020,
arXiv:2003.01690), with the targets ranked by confidence or by MALT (Melamed et al. 2024,
arXiv:2407.02240)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.apgd import apgd_run
from robustlab.attacks.base import (
    Targeted,
    check_classes,
    geometry,
    get_targeted_loss,
    register,
    target_blocks,
)
from robustlab.attacks.malt import rank_targets
from robustlab.threat import ThreatModel


@register("apgd-t")
@dataclass(frozen=True)
class APGDT:
    """Targeted Auto-PGD (Croce & Hein 2020, arXiv:2003.01690), AutoAttack's APGD-T.

    One APGD run on the targeted loss for each of ``n_target_classes`` classes: those ranked
    highest after the true class at the clean point (``targeting="confidence"``, AutoAttack) or
    with the smallest MALT score (``"malt"``), starting at rank ``first_target``; success is any
    misclassification. With ``parallel`` the runs of all targets go side by side in one batch and
    a point stops as soon as any of its runs succeeds (the same runs as the sequential order, far
    fewer Python steps); without, targets run one after the other on the points not yet broken.
    ``reach`` (MALT only): a target whose score (its linearised distance) exceeds ``reach * eps``
    is not attacked. ``eot`` > 1 averages each gradient over that many forward passes.
    """

    n_iter: int = 100
    n_target_classes: int = 9
    restarts: int = 1
    loss: str | Targeted = "dlr-targeted"  # "dlr-targeted" | "ce-targeted" | (logits, y, t) -> (N,)
    rho: float = 0.75
    parallel: bool = True
    seed: int = 0
    targeting: str = "confidence"  # "confidence" | "malt"
    first_target: int = 0
    reach: float | None = None  # MALT only: targets with a score above reach * eps are left out
    eot: int = 1

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        objective = get_targeted_loss(self.loss)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        geo = geometry(threat, x)
        others, scores = rank_targets(model, x, y, geo.norm, self.targeting, self.eot)
        check_classes(self.loss, others.shape[1] + 1)
        within = torch.ones(others.shape, dtype=torch.bool, device=x.device)
        if self.reach is not None and scores is not None:
            eps = (
                geo.eps.flatten(1).amax(1, keepdim=True) if isinstance(geo.eps, Tensor) else geo.eps
            )
            within = scores <= self.reach * eps
        k = others.shape[1]
        ranks = list(
            range(min(self.first_target, k), min(self.first_target + self.n_target_classes, k))
        )
        blocks = target_blocks(ranks, len(x), x[0].numel(), self.parallel)
        best = x.clone()
        todo = torch.arange(len(x), device=x.device)
        first = True
        for block in blocks:
            for _ in range(max(1, self.restarts)):
                if len(todo) == 0:
                    return best
                cols = torch.tensor(block, device=x.device)
                sel = within[todo][:, cols]  # (points, targets of the block) to run
                has = sel.any(1)
                if not bool(has.any()):
                    break
                sub = todo[has]
                pick = sel[has].t().reshape(-1)  # runs in block order
                group = torch.arange(len(sub), device=x.device).repeat(len(block))[pick]
                target = others[sub][:, cols].t().reshape(-1)[pick]
                broken, adv = apgd_run(
                    model, x[sub][group], y[sub][group], threat, objective, target=target,
                    n_iter=self.n_iter, rho=self.rho, gen=gen, group=group, n_points=len(sub),
                    eot=self.eot,
                )  # fmt: skip
                if first:
                    best[sub] = adv
                    first = False
                else:
                    best[sub[broken]] = adv[broken]
                keep = torch.ones(len(todo), dtype=torch.bool, device=x.device)
                keep[has.nonzero().squeeze(1)[broken]] = False
                todo = todo[keep]
        return best


@register("malt")
@dataclass(frozen=True)
class MALT(APGDT):
    """MALT (Melamed, Yehudai & Shamir 2024, arXiv:2407.02240): targeted APGD on the classes with
    the smallest mesoscopic almost-linearity score |z_y - z_t| / ||grad_x (z_y - z_t)||_*, the
    distance to each decision boundary of the model linearised at the clean point."""

    targeting: str = "malt"

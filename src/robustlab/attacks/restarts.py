"""Random restarts of Auto-PGD side by side (Croce & Hein 2020, arXiv:2003.01690), untargeted and
towards the targets MALT ranks first (Melamed et al. 2024, arXiv:2407.02240); and the wrapper
that runs an attack only on the points that came closest to the decision boundary."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.attacks.apgd import apgd_run
from robustlab.attacks.base import (
    Attack,
    geometry,
    get_loss,
    get_targeted_loss,
    register,
    steps_alias,
)
from robustlab.attacks.malt import rank_targets
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel

RESTART_ELEMENTS = 1 << 17  # input elements per batch of runs: 167 MNIST images, 42 CIFAR ones


@register("restarts")
@dataclass(frozen=True)
class Restarts:
    """Random restarts of Auto-PGD (Croce & Hein 2020, arXiv:2003.01690), ``copies`` runs per
    point side by side in one batch: half on the cross-entropy, half on the targeted
    cross-entropy towards the ``n_target_classes`` classes ranked first by MALT's score (Melamed
    et al. 2024, arXiv:2407.02240; or by confidence, ``targeting``) in turn. A point stops as
    soon as one of its runs misclassifies it.

    Meant for the few points the attacks before left barely robust: on a point where one run
    from a random start succeeds with probability p, k runs miss it with probability (1 - p) ** k.
    On such points the random start decides, not the length of the run (the same successes in
    25 iterations as in 100, benchmarks/attacks_benchmark.py models): many short runs.
    """

    n_iter: int = 25
    copies: int = 48
    n_target_classes: int = 3
    targeting: str = "malt"  # "confidence" | "malt"
    rho: float = 0.75
    seed: int = 0
    eot: int = 1

    steps: int | None = field(default=None, repr=False, compare=False)  # alias of n_iter

    def __post_init__(self) -> None:
        steps_alias(self)
        if self.copies < 1 or self.n_target_classes < 0:
            raise RobustlabError(
                "copies must be >= 1 and n_target_classes >= 0; "
                f"found {self.copies} and {self.n_target_classes}"
            )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        best = x.clone()
        if len(x) == 0:
            return best
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        n_t = min(self.n_target_classes, n_classes - 1) if n_classes > 2 else 0
        n_t = min(n_t, self.copies - 1)
        # run r of a point: untargeted when r is even, else towards target (r // 2) % n_t
        targets = torch.full((len(x), 1), -1, dtype=torch.long, device=x.device)
        r = torch.arange(self.copies, device=x.device)
        slot = torch.zeros_like(r)
        if n_t:
            others, _ = rank_targets(
                model, x, y, geometry(threat, x).norm, self.targeting, self.eot
            )
            targets = torch.cat([targets, others[:, :n_t]], 1)
            slot = torch.where(r % 2 == 0, 0, 1 + (r // 2) % n_t)
        # all runs side by side, RESTART_ELEMENTS input elements per call (at least one point's)
        per = max(1, RESTART_ELEMENTS // max(1, x[0].numel() * self.copies))
        for i in range(0, len(x), per):
            sub = torch.arange(i, min(i + per, len(x)), device=x.device)
            group = sub.repeat(self.copies) - i
            target = targets[sub][:, slot].t().reshape(-1)
            _, best[sub] = apgd_run(
                model, x[sub][group], y[sub][group], threat, _mixed, target=target,
                n_iter=self.n_iter, rho=self.rho, gen=gen, group=group, n_points=len(sub),
                eot=self.eot,
            )  # fmt: skip
        return best


def _mixed(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """The cross-entropy where ``target`` is -1, else minus the cross-entropy towards it."""
    ce = get_loss("ce")(logits, y)
    towards = get_targeted_loss("ce-targeted")(logits, y, target.clamp_min(0))
    return torch.where(target < 0, ce, towards)


@dataclass(frozen=True)
class Close:
    """``attack``, run by the ensemble only on the points whose smallest logit margin over the
    attacks before it (z_y minus the largest other logit, at their candidates) stayed below
    ``below`` x the point's clean margin: the points that came close to the decision boundary.
    Called directly, it attacks every point it is given."""

    attack: Attack
    below: float

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        return self.attack(model, x, y, threat)

"""Attacks on prediction sets: projected gradient ascent of the true label's score (so that it
leaves the set), on the model itself and, for the smoothed sets, through the noise with EOT
(Athalye et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.adaptive import Ascent
from robustlab.threat import ThreatModel


def score_attack(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, steps: int = 40,
                 restarts: int = 1, seed: int = 0) -> Tensor:  # fmt: skip
    """PGD on ``-log softmax_y``: the true label's LAC score pushed up."""

    def objective(xa: Tensor) -> Tensor:
        return -torch.log_softmax(model(xa), 1).gather(1, y[:, None])[:, 0]

    return Ascent(steps=steps, restarts=restarts, seed=seed)(objective, x, threat)


def smoothed_score_attack(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel,
                          sigma: float, *, steps: int = 40, draws: int = 8, eot: int = 2,
                          seed: int = 0) -> Tensor:  # fmt: skip
    """PGD with EOT on ``-log E_delta softmax_y(x + delta)``: the smoothed score pushed up
    (``draws`` noise draws per objective call, gradients averaged over ``eot`` calls)."""
    gen = torch.Generator(device=x.device).manual_seed(seed + 1)

    def objective(xa: Tensor) -> Tensor:
        noise = torch.randn((draws, *xa.shape), generator=gen, dtype=xa.dtype, device=xa.device)
        noisy = (xa[None] + sigma * noise).reshape(-1, *xa.shape[1:])
        p = torch.softmax(model(noisy), 1).view(draws, len(xa), -1).mean(0)
        return -torch.log(p.gather(1, y[:, None])[:, 0] + 1e-12)

    return Ascent(steps=steps, eot=eot, seed=seed)(objective, x, threat)

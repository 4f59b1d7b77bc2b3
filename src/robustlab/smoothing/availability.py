"""Availability attacks on randomized smoothing ("Certifiers Make Neural Networks Vulnerable to
Availability Attacks", Lorenz et al. 2023, arXiv:2108.11299): inside the threat model, push each
input towards points where the top two class probabilities under noise are close, so that
PREDICT abstains and CERTIFY gives no certificate. The gap is minimised by projected gradient
ascent with expectation over the noise (EOT, Athalye et al. 2018)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.adaptive import Ascent
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.results import Metric, metric_dicts
from robustlab.smoothing.core import ABSTAIN, SmoothingResult, smooth
from robustlab.threat import LpBall, parse_norm


def noisy_gap(
    model: nn.Module, x: Tensor, sigma: float, draws: int, gen: torch.Generator
) -> Tensor:
    """The gap between the two largest mean softmax probabilities over ``draws`` noisy copies
    of each input (a differentiable estimate of the smoothed classifier's top-2 gap): (N,)."""
    noise = torch.randn((draws, *x.shape), generator=gen, dtype=x.dtype, device=x.device)
    noisy = (x[None] + sigma * noise).reshape(-1, *x.shape[1:])
    p = torch.softmax(model(noisy), 1).view(draws, len(x), -1).mean(0)
    top = p.topk(2, 1).values
    return top[:, 0] - top[:, 1]


def gap_attack(model: nn.Module, x: Tensor, threat, sigma: float, *, steps: int = 40,
               draws: int = 16, eot: int = 2, seed: int = 0) -> Tensor:  # fmt: skip
    """Points of the threat model around ``x`` where the smoothed top-2 gap is smallest found."""
    gen = torch.Generator(device=x.device).manual_seed(seed + 7)
    attack = Ascent(steps=steps, eot=eot, seed=seed)
    return attack(lambda xa: -noisy_gap(model, xa, sigma, draws, gen), x, threat)


def _rates(r: SmoothingResult) -> dict:
    total = max(len(r.samples), 1)
    return {
        "abstain_rate": r.abstain_rate,
        "uncertified_rate": sum(s["radius"] is None for s in r.samples) / total,
        "accuracy": r.clean_accuracy,
        "wrong_rate": sum(s["prediction"] not in (ABSTAIN, s["label"]) for s in r.samples) / total,
    }


@dataclass(frozen=True)
class AvailabilityResult:
    """Abstention of a smoothed classifier clean and at the availability attack's points:
    PREDICT's abstention, CERTIFY's missing certificates, accuracy (abstention counts wrong) and
    wrong answers (abstention not counted)."""

    eps: float
    norm: str
    sigma: float
    steps: int
    clean: dict  # abstain_rate, uncertified_rate, accuracy, wrong_rate
    attacked: dict
    examples: int
    seconds: float

    def to_dict(self) -> dict:
        return {"eps": self.eps, "norm": self.norm, "sigma": self.sigma, "steps": self.steps,
                "clean": self.clean, "attacked": self.attacked, "examples": self.examples,
                "seconds": self.seconds}  # fmt: skip

    def metrics(self) -> list[Metric]:
        out = []
        for cond in ("clean", "attacked"):
            d = getattr(self, cond)
            out.append(Metric(f"availability {cond} abstain_rate@{self.eps:g}",
                              d["abstain_rate"], False))  # fmt: skip
            out.append(Metric(f"availability {cond} uncertified_rate@{self.eps:g}",
                              d["uncertified_rate"], False))  # fmt: skip
        return out

    def metric_dicts(self) -> list[dict]:
        return metric_dicts(self.metrics())


def availability(
    model: nn.Module,
    data: Dataset,
    sigma: float,
    eps: float,
    norm: str = "2",
    *,
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    steps: int = 40,
    draws: int = 16,
    clean: SmoothingResult | None = None,
    batch_size: int = 1000,
    seed: int = 0,
) -> AvailabilityResult:
    """The availability attack on the smoothed classifier (``sigma``) inside the ``norm`` ball
    of radius ``eps`` around each input of ``data``, and PREDICT / CERTIFY (``n0``, ``n``,
    ``alpha``) clean and at the attacked points. ``clean``: a smoothing result of the same data
    and settings already computed (else it is computed here)."""
    norm = parse_norm(norm)
    if not eps >= 0 or steps < 1 or draws < 1:
        raise RobustlabError(f"eps >= 0, steps >= 1 and draws >= 1 expected; found {eps}, {steps}, "
                             f"{draws}")  # fmt: skip
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        if clean is None:
            clean = smooth(model, data, sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                           seed=seed)  # fmt: skip
        threat = LpBall(norm, eps, data.lower, data.upper)
        x_adv = torch.cat([
            gap_attack(model, data.x[i : i + 64], threat, sigma, steps=steps, draws=draws,
                       seed=seed + i)
            for i in range(0, len(data), 64)
        ])  # fmt: skip
        adv = Dataset(f"{data.name} (availability attack)", x_adv, data.y, data.lower, data.upper)
        attacked = smooth(model, adv, sigma, n0=clean.n0, n=clean.n, alpha=clean.alpha,
                          batch_size=batch_size, seed=seed + 1)  # fmt: skip
    finally:
        model.train(was_training)
    return AvailabilityResult(eps, norm, sigma, steps, _rates(clean), _rates(attacked),
                              len(data), time.perf_counter() - start)  # fmt: skip

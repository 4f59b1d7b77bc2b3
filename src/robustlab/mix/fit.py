"""Fitting MixedNUTS's transform and mixing weight on a held-back split (Bai et al. 2024,
arXiv:2402.02263, Algorithm 1): the robust member's minimum-margin adversarial inputs give its
transformed probability margins m; a point stays correct for the mixture whatever the accurate
member says when ``alpha * m >= 1 - alpha``; for a strength q (the share of the robust member's
robust points to keep), alpha is set so that a share q of the margins clears that bar, and the
transform (scale, power, bias) is the one with the best clean accuracy of the mixture."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.adaptive import Ascent
from robustlab.errors import RobustlabError
from robustlab.inputs import batched_logits as logits_of
from robustlab.mix.transform import NutsMap, mixed_log_probs
from robustlab.threat import ThreatModel

GRID = {
    "scale": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0),
    "power": (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
    "bias": (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0),
}
MIN_MARGIN = 1e-6  # a transformed margin below this keeps nothing: alpha 1 (the robust member)


def _margins(logits: Tensor, y: Tensor) -> Tensor:
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -torch.inf).amax(1)
    return true - other


@dataclass(frozen=True)
class FitData:
    """What fitting needs, computed once: the members' clean logits on the fit split, the robust
    member's logits at its minimum-margin adversarial inputs, and which points it keeps."""

    y: Tensor
    accurate: Tensor  # clean logits (N, K)
    robust: Tensor  # clean logits (N, K)
    robust_adv: Tensor  # logits at the minimum-margin inputs (N, K)
    kept: Tensor  # bool (N,): the robust member is right at the clean and the adversarial input


def fit_data(
    accurate: nn.Module,
    robust: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 50,
    restarts: int = 2,
    seed: int = 0,
    batch_size: int = 256,
) -> FitData:
    """The members' logits on the fit split and the robust member's minimum-margin inputs (PGD
    on minus its logit margin, ``restarts`` random starts, the smallest margin kept)."""
    ascent = Ascent(steps=steps, restarts=restarts, seed=seed)
    x_adv = torch.cat([
        ascent(lambda xa, yb=y[i : i + batch_size]: -_margins(robust(xa), yb),
               x[i : i + batch_size], threat)
        for i in range(0, len(x), batch_size)
    ])  # fmt: skip
    za, zr, zr_adv = logits_of(accurate, x), logits_of(robust, x), logits_of(robust, x_adv)
    kept = (zr.argmax(1) == y) & (_margins(zr_adv, y) > 0)
    return FitData(y, za, zr, zr_adv, kept)


@dataclass(frozen=True)
class MixFit:
    """One fitted mixture: its strength (target share of the robust member's robust fit points
    kept), the mixing weight, the transform, and what they give on the fit split."""

    strength: float
    alpha: float
    transform: NutsMap | None
    fit_clean_accuracy: float
    fit_kept: float  # share of the robust member's robust fit points the margin bar keeps

    def to_dict(self) -> dict:
        return {
            "strength": self.strength,
            "alpha": self.alpha,
            "transform": None if self.transform is None else self.transform.to_dict(),
            "fit_clean_accuracy": self.fit_clean_accuracy,
            "fit_kept": self.fit_kept,
        }


def _candidates(grid: dict) -> list[NutsMap | None]:
    maps = [
        NutsMap(s, p, c)
        for s, p, c in itertools.product(grid["scale"], grid["power"], grid["bias"])
    ]
    return [None, *maps]  # None: plain probability mixing (Bai et al. 2023)


def fit_mixture(fd: FitData, strength: float, grid: dict | None = None) -> MixFit:
    """The transform and alpha of the given strength q in (0, 1] with the best clean accuracy on
    the fit split (ties: the smaller alpha, then the first in the grid)."""
    if not 0 < strength <= 1:
        raise RobustlabError(f"strength must lie in (0, 1]; found {strength}")
    if not bool(fd.kept.any()):
        raise RobustlabError("the robust model keeps no fit point under attack: nothing to mix")
    best: MixFit | None = None
    yk = fd.y[fd.kept]
    for t in _candidates(grid or GRID):
        probs = torch.softmax(fd.robust_adv[fd.kept] if t is None else t(fd.robust_adv[fd.kept]), 1)
        m = _margins(probs.double(), yk)
        bar = float(torch.quantile(m, 1 - strength, interpolation="lower"))
        alpha = 1.0 if bar < MIN_MARGIN else 1.0 / (1.0 + bar)
        pred = mixed_log_probs(fd.accurate, fd.robust, alpha, t).argmax(1)
        acc = float((pred == fd.y).double().mean())
        kept = float(((m >= bar) if bar >= MIN_MARGIN else (m > 0)).double().mean())
        cand = MixFit(strength, alpha, t, acc, kept)
        if best is None or (acc, -alpha) > (best.fit_clean_accuracy, -best.alpha):
            best = cand
    assert best is not None
    return best


def target_strength(fd: FitData, slack: float) -> float:
    """MixedNUTS's constraint as a strength: the share of the robust member's robust fit points
    to keep so that the mixture's estimated robust accuracy on the fit split stays within
    ``slack`` of the robust member's, ``1 - slack / r`` (r: the robust member's robust share of
    the fit points), at least one point's share."""
    if not slack >= 0:
        raise RobustlabError(f"slack must be >= 0; found {slack}")
    n_kept = int(fd.kept.sum())
    if n_kept == 0:
        raise RobustlabError("the robust model keeps no fit point under attack: nothing to mix")
    r = n_kept / len(fd.y)
    return min(1.0, max(1.0 / n_kept, 1.0 - slack / r))

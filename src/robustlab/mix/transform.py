"""MixedNUTS (Bai et al. 2024, arXiv:2402.02263): the robust member's logits go through a
three-parameter nonlinear transform ``s * Clamp(LN(z) + c) ** p`` (LN: standardised over the
classes; Clamp: ReLU) before the two members are mixed in probability space,
``log((1 - alpha) softmax(z_acc) + alpha softmax(M(z_rob)))`` (Bai et al. 2023,
arXiv:2301.12554, mix probabilities as this)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError

LN_EPS = 1e-8  # added to the variance inside the layer normalisation (as the paper's code does)
TINY = 1e-30  # added to a clamped logit before the power (0 ** p, p < 1, has no gradient) and to a
# probability before the log (log 0 = -inf): far below float32's resolution of either
GRADIENTS = ("exact", "surrogate")
RAW_SHARE = 0.9  # the surrogate's share of the robust member's raw probabilities (as the paper's)


@dataclass(frozen=True)
class NutsMap:
    """The transform ``s * Clamp(LN(z) + c) ** p`` of MixedNUTS (Bai et al. 2024,
    arXiv:2402.02263); ``scale`` s > 0, ``power`` p > 0, ``bias`` c."""

    scale: float = 1.0
    power: float = 1.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        for name in ("scale", "power", "bias"):
            v = getattr(self, name)
            if not math.isfinite(v) or (name != "bias" and v <= 0):
                kind = "a finite number" if name == "bias" else "a positive number"
                raise RobustlabError(f"{name} must be {kind}; found {v}")

    def __call__(self, z: Tensor) -> Tensor:
        centred = z - z.mean(1, keepdim=True)
        var = (centred * centred).mean(1, keepdim=True)  # layer normalisation's (biased) variance
        clamped = torch.relu(centred / torch.sqrt(var + LN_EPS) + self.bias)
        return (clamped + TINY) ** self.power * self.scale

    def to_dict(self) -> dict:
        return {"scale": self.scale, "power": self.power, "bias": self.bias}


IDENTITY = None  # no transform: the robust member's own softmax


class MixedClassifier(nn.Module):
    """Two classifiers mixed in probability space: ``log((1 - alpha) softmax(accurate(x)) + alpha
    softmax(M(robust(x))))`` with M a :class:`NutsMap` (or the identity).

    ``gradient="surrogate"``: the same outputs, with gradients taken through the surrogate of the
    paper's adaptive attack (the robust member's probabilities 90% raw, 10% transformed): a
    straight-through estimator where the transform saturates or is flat."""

    def __init__(
        self,
        accurate: nn.Module,
        robust: nn.Module,
        alpha: float,
        transform: NutsMap | None = None,
        gradient: str = "exact",
    ) -> None:
        super().__init__()
        if not (math.isfinite(alpha) and 0 <= alpha <= 1):
            raise RobustlabError(f"alpha must lie in [0, 1]; found {alpha}")
        if gradient not in GRADIENTS:
            raise RobustlabError(
                f"gradient must be one of {', '.join(GRADIENTS)}; found {gradient!r}"
            )
        self.accurate, self.robust = accurate, robust
        self.alpha, self.transform, self.gradient = float(alpha), transform, gradient

    def forward(self, x: Tensor) -> Tensor:
        za, zr = self.accurate(x), self.robust(x)
        mapped = zr if self.transform is None else self.transform(zr)
        pa, pr = torch.softmax(za, 1), torch.softmax(mapped, 1)
        exact = torch.log(pa * (1 - self.alpha) + pr * self.alpha + TINY)
        if self.gradient == "exact":
            return exact
        raw = torch.softmax(zr, 1) * RAW_SHARE + pr * (1 - RAW_SHARE)
        surrogate = torch.log(pa * (1 - self.alpha) + raw * self.alpha + TINY)
        return surrogate + (exact - surrogate).detach()

    def with_gradient(self, gradient: str) -> MixedClassifier:
        """The same mixture with another gradient path (the members are shared)."""
        return MixedClassifier(self.accurate, self.robust, self.alpha, self.transform, gradient)


def mixed_log_probs(
    za: Tensor, zr: Tensor, alpha: float | Tensor, transform: NutsMap | None
) -> Tensor:
    """The mixture's outputs from the members' logits (no model call): what fitting evaluates."""
    mapped = zr if transform is None else transform(zr)
    if isinstance(alpha, Tensor):
        alpha = alpha.view(-1, 1)
    return torch.log(torch.softmax(za, 1) * (1 - alpha) + torch.softmax(mapped, 1) * alpha + TINY)

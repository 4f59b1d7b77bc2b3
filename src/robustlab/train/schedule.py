"""Eps schedules for certified and adversarial training: a warm-up at eps = 0, then a ramp to the
target (Gowal et al. 2018, arXiv:1810.12715; the smoothed ramp of Shi et al. 2021, arXiv:2103.17268:
polynomial growth up to a mid point, then linear)."""

from __future__ import annotations

from dataclasses import dataclass

from robustlab.errors import RobustlabError

SHAPES = ("smooth", "linear", "constant")


@dataclass(frozen=True)
class EpsSchedule:
    """eps as a function of the training step.

    ``warmup`` epochs of standard training (eps = 0), then ``ramp`` epochs growing eps to its
    target, then the target. ``shape="smooth"`` grows as ``t**power`` up to ``mid`` of the ramp
    and linearly after it (continuous slope, as auto_LiRPA's SmoothedScheduler);
    ``"linear"`` is Gowal et al.'s linear ramp; ``"constant"`` uses the target from the start.
    """

    eps: float
    warmup: float = 0.0  # epochs
    ramp: float = 0.0  # epochs
    shape: str = "smooth"
    mid: float = 0.25
    power: float = 4.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise RobustlabError(
                f"eps schedule shape must be one of {SHAPES}; found {self.shape!r}"
            )
        if self.eps < 0 or self.warmup < 0 or self.ramp < 0:
            raise RobustlabError(
                f"eps, warm-up and ramp must be >= 0; found {self.eps}, {self.warmup}, {self.ramp}"
            )
        if not 0 < self.mid < 1 or self.power < 1:
            raise RobustlabError(
                f"smooth ramp needs 0 < mid < 1 and power >= 1; found {self.mid}, {self.power}"
            )

    def progress(self, epoch: float) -> float:
        """Fraction of the ramp done at ``epoch`` (fractional epochs count steps): 0 .. 1."""
        if self.shape == "constant":
            return 1.0
        t = epoch - self.warmup
        if t < 0:
            return 0.0
        if self.ramp <= 0 or t >= self.ramp:
            return 1.0
        return t / self.ramp

    def __call__(self, epoch: float) -> float:
        """eps at ``epoch`` (a fraction of the way through epoch k is k + fraction)."""
        r = self.progress(epoch)
        if self.shape == "linear" or r in (0.0, 1.0) or self.shape == "constant":
            return self.eps * r
        m, p = self.mid, self.power
        at_mid = m / (p * (1 - m) + m)  # equal slopes of t**p and the line at the mid point
        if r < m:
            return self.eps * at_mid * (r / m) ** p
        return self.eps * (at_mid + (1 - at_mid) * (r - m) / (1 - m))

    def to_dict(self) -> dict:
        return {
            "eps": self.eps,
            "warmup": self.warmup,
            "ramp": self.ramp,
            "shape": self.shape,
            "mid": self.mid,
            "power": self.power,
        }


def default_schedule(method_name: str, eps: float, epochs: int) -> EpsSchedule:
    """Shi et al.'s short warm-up for certified training (one epoch at eps = 0 when there are
    enough epochs, then a ramp over half of the rest); the target eps from the start otherwise."""
    if method_name in ("ibp", "crown-ibp"):
        warmup = 1.0 if epochs >= 4 else 0.0
        return EpsSchedule(eps, warmup=warmup, ramp=max(1.0, (epochs - warmup) / 2))
    return EpsSchedule(eps, shape="constant")

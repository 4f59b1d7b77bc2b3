"""Certify or abstain, and its availability attack ("Certifiers Make Neural Networks Vulnerable to
Availability Attacks", Lorenz et al. 2023, arXiv:2108.11299). The deployment answers the
classifier's label at x only when sound bounds (``compute_bounds``) prove it constant on the Linf
ball of radius ``radius`` around x, else abstains. The attacker, inside its own threat model,
pushes inputs to where that certificate fails: it maximises minus a differentiable surrogate of
the certificate (the IBP / CROWN-IBP lower bound of the smallest logit margin over the ball,
``train.certified.margin_lower_bounds``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.adaptive import Ascent
from robustlab.bounds import compute_bounds
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.results import Metric, metric_dicts
from robustlab.smoothing import ABSTAIN
from robustlab.threat import LpBall, parse_norm
from robustlab.train.certified import margin_lower_bounds


def certified_predictions(model: nn.Module, x: Tensor, radius: float, lower: float,
                          upper: float, method: str = "crown") -> tuple[Tensor, Tensor]:  # fmt: skip
    """The classifier's labels and whether sound bounds prove each constant on the Linf ball of
    ``radius`` around its input (clipped to [lower, upper]): ``(labels, certified)``."""

    with torch.no_grad():
        labels = model(x).argmax(1)
    k = int(model(x[:1]).shape[1])
    eye = torch.eye(k, dtype=torch.float64)
    C = eye[labels][:, None, :] - eye[None, :, :]  # rows e_c - e_j; the row j = c is zero
    b = compute_bounds(model, (LpBall("inf", radius, lower, upper), x), method, C,
                       bound_upper=False).lower.double()  # fmt: skip
    own = torch.nn.functional.one_hot(labels, k).bool()
    return labels, ((b > 0) | own).all(1)


def looseness_attack(model: nn.Module, x: Tensor, threat: LpBall, radius: float, *,
                     beta: float = 0.0, steps: int = 40, seed: int = 0) -> Tensor:  # fmt: skip
    """Points inside ``threat`` around x where the certificate of x's label over the radius ball
    is weakest found: PGD on minus the smallest differentiable margin lower bound (IBP at
    ``beta`` 0, CROWN-IBP at 1) over ``[x' - radius, x' + radius]``."""

    with torch.no_grad():
        labels = model(x).argmax(1)
    k = int(model(x[:1]).shape[1])
    own = torch.nn.functional.one_hot(labels, k).bool()

    def objective(xa: Tensor) -> Tensor:
        lo = (xa - radius).clamp(threat.lower, threat.upper)
        hi = (xa + radius).clamp(threat.lower, threat.upper)
        m = margin_lower_bounds(model, lo, hi, labels, k, beta=beta)
        return -m.masked_fill(own, torch.inf).amin(1)

    return Ascent(steps=steps, seed=seed)(objective, x, threat)


def _rates(labels: Tensor, certified: Tensor, y: Tensor) -> dict:
    answer = torch.where(certified, labels, torch.full_like(labels, ABSTAIN))
    return {
        "abstain_rate": float((~certified).double().mean()),
        "accuracy": float((answer == y).double().mean()),
        "wrong_rate": float((certified & (labels != y)).double().mean()),
    }


@dataclass(frozen=True)
class AbstainResult:
    """A certify-or-abstain deployment clean and at the availability attack's points."""

    radius: float
    eps: float
    norm: str
    method: str
    clean: dict  # abstain_rate, accuracy (abstentions wrong), wrong_rate
    attacked: dict
    examples: int
    seconds: float

    def to_dict(self) -> dict:
        return {"radius": self.radius, "eps": self.eps, "norm": self.norm, "method": self.method,
                "clean": self.clean, "attacked": self.attacked, "examples": self.examples,
                "seconds": self.seconds}  # fmt: skip

    def metrics(self) -> list[Metric]:
        return [Metric(f"certify-or-abstain {c} abstain_rate@{self.eps:g}",
                       getattr(self, c)["abstain_rate"], False) for c in ("clean", "attacked")]  # fmt: skip

    def metric_dicts(self) -> list[dict]:
        return metric_dicts(self.metrics())

    @staticmethod
    def merged(parts: list[AbstainResult]) -> AbstainResult:
        """One result from results on disjoint chunks of the data (same settings): the rates
        weighted by each chunk's examples, the seconds added."""
        if not parts:
            raise RobustlabError("expected at least one result to merge; found none")
        n = sum(p.examples for p in parts)
        rates = {c: {k: sum(getattr(p, c)[k] * p.examples for p in parts) / n
                     for k in getattr(parts[0], c)} for c in ("clean", "attacked")}  # fmt: skip
        head = parts[0]
        return AbstainResult(head.radius, head.eps, head.norm, head.method, rates["clean"],
                             rates["attacked"], n, sum(p.seconds for p in parts))  # fmt: skip


def certify_or_abstain(
    model: nn.Module,
    data: Dataset,
    radius: float,
    eps: float,
    norm: str = "inf",
    *,
    method: str = "crown",
    beta: float = 0.0,
    steps: int = 40,
    batch_size: int = 64,
    seed: int = 0,
) -> AbstainResult:
    """Abstention of the deployment certifying at ``radius`` (bounds ``method``), clean and
    after the availability attack inside the ``norm`` ball of radius ``eps``."""
    norm = parse_norm(norm)
    if not (radius >= 0 and eps >= 0):
        raise RobustlabError(f"radius and eps must be >= 0; found {radius}, {eps}")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    threat = LpBall(norm, eps, data.lower, data.upper)
    parts: dict[str, list] = {"clean": [], "attacked": []}
    try:
        for i in range(0, len(data), batch_size):
            x = data.x[i : i + batch_size]
            adv = looseness_attack(model, x, threat, radius, beta=beta, steps=steps, seed=seed + i)
            for cond, pts in (("clean", x), ("attacked", adv)):
                parts[cond].append(certified_predictions(model, pts, radius, data.lower,
                                                         data.upper, method))  # fmt: skip
    finally:
        model.train(was_training)
    rates = {c: _rates(torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v]), data.y)
             for c, v in parts.items()}  # fmt: skip
    return AbstainResult(radius, eps, norm, method, rates["clean"], rates["attacked"], len(data),
                         time.perf_counter() - start)  # fmt: skip

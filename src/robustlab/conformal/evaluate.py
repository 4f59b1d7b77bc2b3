"""Coverage and set size of split-conformal, RSCP+ and VRCP sets, clean and under attacks on the
sets, on a test split after calibrating on a held-back split of the data."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.conformal.attack import score_attack, smoothed_score_attack
from robustlab.conformal.scores import lac_lower_bounds, lac_scores, smoothed_scores
from robustlab.conformal.sets import RSCPPlus, conformal_quantile, split_sets, verified_sets
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.mix import split
from robustlab.results import Metric, metric_dicts
from robustlab.threat import LpBall, parse_norm

METHODS = ("split", "rscp+", "vrcp")
ROBUST = ("rscp+", "vrcp")  # the methods whose coverage the threat model must not break
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ConformalResult:
    """Per method and input condition (clean, each attack, the worst over attacks): empirical
    coverage of the true label and mean set size on the test split."""

    alpha: float
    eps: float
    norm: str
    sigma: float
    n_samples: int
    beta: float
    bound_method: str
    n_cal: int
    n_test: int
    clean_accuracy: float  # the model's, on the test split
    thresholds: dict  # method -> tau
    rows: list[dict]  # {method, condition, coverage, mean_size}
    seconds: float

    def row(self, method: str, condition: str) -> dict:
        return next(r for r in self.rows if r["method"] == method and r["condition"] == condition)

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha, "eps": self.eps, "norm": self.norm, "sigma": self.sigma,
            "n_samples": self.n_samples, "beta": self.beta, "bound_method": self.bound_method,
            "n_cal": self.n_cal, "n_test": self.n_test, "clean_accuracy": self.clean_accuracy,
            "thresholds": {k: (None if math.isinf(v) else v) for k, v in self.thresholds.items()},
            "rows": self.rows, "target_coverage": 1 - self.alpha,
            "robust_covered": self.robust_covered(), "seconds": self.seconds,
        }  # fmt: skip

    def robust_covered(self) -> bool:
        """Whether every robust method reaches 1 - alpha clean and under the worst attack."""
        return all(self.row(m, c)["coverage"] >= 1 - self.alpha for m in ROBUST
                   for c in ("clean", "attacked"))  # fmt: skip

    def metrics(self) -> list[Metric]:
        out = [Metric("clean_accuracy", self.clean_accuracy, True)]
        for r in self.rows:
            if r["condition"] in ("clean", "attacked"):
                key = f"{r['method']} {r['condition']}"
                out.append(Metric(f"{key} coverage", r["coverage"], True))
                out.append(Metric(f"{key} mean_size", r["mean_size"], False))
        return out

    def metric_dicts(self) -> list[dict]:
        return metric_dicts(self.metrics())


def _rows(method: str, sets: dict[str, Tensor], y: Tensor) -> list[dict]:
    covered = {c: s.gather(1, y[:, None])[:, 0] for c, s in sets.items()}
    attacked = [c for c in sets if c != "clean"]
    worst = torch.stack([covered[c] for c in attacked]).all(0)
    rows = [{"method": method, "condition": c, "coverage": float(covered[c].double().mean()),
             "mean_size": float(s.sum(1).double().mean())} for c, s in sets.items()]  # fmt: skip
    size = max(float(sets[c].sum(1).double().mean()) for c in attacked)
    rows.append({"method": method, "condition": "attacked",
                 "coverage": float(worst.double().mean()), "mean_size": size})  # fmt: skip
    return rows


def conformal(
    model: nn.Module,
    data: Dataset,
    alpha: float,
    eps: float,
    norm: str = "inf",
    *,
    sigma: float = 0.25,
    n_samples: int = 512,
    beta: float = 0.001,
    bound_method: str = "crown",
    cal_share: float = 0.5,
    steps: int = 40,
    seed: int = 0,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> ConformalResult:
    """Calibrate the three kinds of sets on ``cal_share`` of ``data`` at level ``alpha`` and
    measure them on the rest, clean and at the points of two attacks inside the ``norm`` ball of
    radius ``eps``: PGD on the true label's score, and PGD with EOT on its smoothed score."""
    say = progress or (lambda _m: None)
    norm = parse_norm(norm)
    if not (sigma > 0 and n_samples >= 1 and steps >= 1):
        raise RobustlabError(f"sigma, n_samples and steps must be positive; found {sigma}, "
                             f"{n_samples}, {steps}")  # fmt: skip
    if not 0 < alpha < 1:
        raise RobustlabError(f"alpha must lie in (0, 1); found {alpha}")
    start = time.perf_counter()
    model.eval()
    threat = LpBall(norm, eps, data.lower, data.upper)
    cal, test = split(data, cal_share, seed, "cal_share")
    dim = math.prod(data.x.shape[1:])
    eps2 = eps if norm == "2" else eps * math.sqrt(dim)
    rscp = RSCPPlus(sigma, n_samples, beta)
    gen = torch.Generator().manual_seed(seed)

    def smoothed(x: Tensor) -> Tensor:
        return smoothed_scores(model, x, sigma, n_samples, batch_size=batch_size, generator=gen)

    say(f"calibrating on {len(cal)} examples")
    tau = {"split": conformal_quantile(lac_scores(model, cal.x).gather(1, cal.y[:, None])[:, 0],
                                       alpha)}  # fmt: skip
    tau["vrcp"] = tau["split"]
    with torch.no_grad():
        acc = float((model(test.x).argmax(1) == test.y).double().mean())
    tau["rscp+"] = rscp.calibrate(smoothed(cal.x).gather(1, cal.y[:, None])[:, 0], alpha)
    say(f"attacking the sets of {len(test)} test examples (PGD on the score)")
    points = {"clean": test.x}
    points["score-pgd"] = score_attack(model, test.x, test.y, threat, steps=steps, seed=seed)
    say("attacking the smoothed sets (PGD with EOT on the smoothed score)")
    points["smoothed-score-pgd-eot"] = smoothed_score_attack(model, test.x, test.y, threat,
                                                             sigma, steps=steps, seed=seed)  # fmt: skip
    sets: dict[str, dict[str, Tensor]] = {m: {} for m in METHODS}
    for cond, x in points.items():
        say(f"sets at the {cond} points (bounds: {bound_method})")
        sets["split"][cond] = split_sets(lac_scores(model, x), tau["split"])
        sets["rscp+"][cond] = rscp.sets(smoothed(x), tau["rscp+"], eps2)
        sets["vrcp"][cond] = verified_sets(lac_lower_bounds(model, x, threat, bound_method),
                                           tau["vrcp"])  # fmt: skip
    rows = [r for m in METHODS for r in _rows(m, sets[m], test.y)]
    return ConformalResult(alpha, eps, norm, sigma, n_samples, beta, bound_method, len(cal),
                           len(test), acc, tau, rows, time.perf_counter() - start)  # fmt: skip

"""The clean / robust frontier of mixed classifiers: fit a mixture per strength on a held-back
split, then measure each one (and both members) on the rest, robust accuracy by attacking the
mixture end to end (gradients through both members, and again through the straight-through
surrogate; a point is robust only if neither attack breaks it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlab.attacks import evaluate
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.mix.fit import GRID, MixFit, fit_data, fit_mixture, target_strength
from robustlab.mix.transform import MixedClassifier
from robustlab.results import Metric
from robustlab.threat import LpBall, parse_norm

STRENGTHS = (1.0, 0.99, 0.98, 0.95, 0.9, 0.8)
ROBUST_SLACK = 0.02  # the target: robust accuracy within 2 points of the robust member's
Progress = Callable[[str], None]


def split(
    data: Dataset, fit_share: float, seed: int, name: str = "fit_share"
) -> tuple[Dataset, Dataset]:
    """A seeded random split into the fit part (``fit_share`` of the points) and the rest;
    ``name``: the caller's parameter, as errors name it."""
    if not 0 < fit_share < 1:
        raise RobustlabError(f"{name} must lie in (0, 1); found {fit_share}")
    n_fit = round(len(data) * fit_share)
    if n_fit < 2 or len(data) - n_fit < 2:
        raise RobustlabError(f"data '{data.name}' has {len(data)} examples; expected at least 4")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))

    def part(idx, suffix):
        return Dataset(f"{data.name}{suffix}", data.x[idx], data.y[idx], data.lower, data.upper)

    return part(order[:n_fit], " (fit)"), part(order[n_fit:], " (held out)")


@dataclass(frozen=True)
class MixResult:
    """Members and mixtures on the evaluation split: clean and end-to-end robust accuracy."""

    eps: float
    norm: str
    suite: str
    n_fit: int
    n_eval: int
    rows: list[dict]  # {name, strength, alpha, transform, clean_accuracy, robust_accuracy, ...}
    chosen: int  # the row exported: the most accurate mixture that meets the target, else the
    # most accurate within 2 points of the robust model's robust accuracy, else the most accurate
    target: dict  # {clean_at_least, robust_at_least, met}
    seconds: float
    note: str | None = None  # when the data shows no trade-off to alleviate
    skipped: list[float] = field(default_factory=list)  # strengths left out for lack of time
    fits: list[MixFit] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "suite": self.suite,
            "n_fit": self.n_fit,
            "n_eval": self.n_eval,
            "frontier": self.rows,
            "chosen": self.chosen,
            "target": self.target,
            "note": self.note,
            "skipped": self.skipped,
            "seconds": self.seconds,
        }

    def metrics(self) -> list[Metric]:
        """Clean and robust accuracy of each member and mixture."""
        out = []
        for r in self.rows:
            out.append(Metric(f"{r['name']} clean_accuracy", r["clean_accuracy"], True))
            out.append(
                Metric(f"{r['name']} robust_accuracy@{self.eps:g}", r["robust_accuracy"], True)
            )
        return out


def _robust(model: nn.Module, data: Dataset, eps: float, norm: str, suite: str, seed: int,
            batch_size: int, say: Progress) -> torch.Tensor:  # fmt: skip
    r = evaluate(model, data, [eps], norm, suite=suite, seed=seed, batch_size=batch_size,
                 checks=False, progress=say)  # fmt: skip
    return torch.tensor(r.robust[0])


def _clean(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return float((model(data.x).argmax(1) == data.y).double().mean())


def mix(
    accurate: nn.Module,
    robust: nn.Module,
    data: Dataset,
    eps: float,
    norm: str = "inf",
    *,
    strengths: Sequence[float] = STRENGTHS,
    fit_share: float = 0.5,
    suite: str = "fast",
    grid: dict | None = None,
    seed: int = 0,
    batch_size: int = 256,
    fit_target: bool = True,
    progress: Progress | None = None,
    fits_in: Callable[[float], bool] | None = None,
) -> MixResult:
    """MixedNUTS mixtures of ``accurate`` and ``robust`` at each strength, fitted on a share
    ``fit_share`` of ``data`` and measured on the rest, with both members beside them.
    ``fit_target``: also the strength MixedNUTS's constraint gives on the fit split (robust
    accuracy within 2 points of the robust member's: :func:`target_strength`), in its place
    among the others (its row says ``fit_target``).

    ``progress`` hears of every attack; ``fits_in(seconds)`` (e.g. a deadline's ``fits``) is
    asked before each mixture after the first with the time the last one took: when it says
    no, the remaining strengths are left out (listed in ``skipped``)."""
    say = progress or (lambda _m: None)
    norm = parse_norm(norm)
    threat = LpBall(norm, eps, data.lower, data.upper)
    strengths = [float(q) for q in strengths]
    if len(strengths) == 0:
        raise RobustlabError("expected at least one strength")
    start = time.perf_counter()
    accurate.eval()
    robust.eval()
    fit_d, eval_d = split(data, fit_share, seed)
    say(f"minimum-margin attack on the robust model ({len(fit_d)} fit examples)")
    fd = fit_data(accurate, robust, fit_d.x, fit_d.y, threat, seed=seed, batch_size=batch_size)
    q_fit = target_strength(fd, ROBUST_SLACK) if fit_target else None
    if q_fit is not None and all(abs(q - q_fit) > 1e-9 for q in strengths):
        at = next((i for i, q in enumerate(strengths) if q < q_fit), len(strengths))
        strengths.insert(at, q_fit)
    fits = [fit_mixture(fd, q, grid or GRID) for q in strengths]
    rows = []
    t_members = time.perf_counter()
    for name, model in (("accurate", accurate), ("robust", robust)):
        say(f"attacking the {name} model ({len(eval_d)} examples)")
        rob = _robust(model, eval_d, eps, norm, suite, seed, batch_size, say)
        alpha = 0.0 if name == "accurate" else 1.0
        rows.append({"name": name, "strength": None, "alpha": alpha, "transform": None,
                     "clean_accuracy": _clean(model, eval_d),
                     "robust_accuracy": float(rob.double().mean()),
                     "robust_exact_gradient": float(rob.double().mean()),
                     "robust_surrogate_gradient": None, "fit_clean_accuracy": None,
                     "fit_kept": None, "fit_target": False})  # fmt: skip
    last = 2 * (time.perf_counter() - t_members)  # two attacks, each on both members at once
    skipped: list[float] = []
    for f in fits:
        if skipped or (fits_in is not None and len(rows) > 2 and not fits_in(last)):
            skipped.append(f.strength)
            continue
        say(f"attacking the mixture of strength {f.strength:g} end to end")
        t0 = time.perf_counter()
        mixed = MixedClassifier(accurate, robust, f.alpha, f.transform)
        exact = _robust(mixed, eval_d, eps, norm, suite, seed, batch_size, say)
        surr = _robust(mixed.with_gradient("surrogate"), eval_d, eps, norm, suite, seed,
                       batch_size, say)  # fmt: skip
        last = time.perf_counter() - t0
        aimed = q_fit is not None and abs(f.strength - q_fit) <= 1e-9
        rows.append({"name": f"mix q={f.strength:.3g} (fit target)" if aimed
                     else f"mix q={f.strength:g}",
                     **f.to_dict(), "fit_target": aimed,
                     "clean_accuracy": _clean(mixed, eval_d),
                     "robust_accuracy": float((exact & surr).double().mean()),
                     "robust_exact_gradient": float(exact.double().mean()),
                     "robust_surrogate_gradient": float(surr.double().mean())})  # fmt: skip
    acc, rob = rows[0], rows[1]
    target = {
        "clean_at_least": (acc["clean_accuracy"] + rob["clean_accuracy"]) / 2,
        "robust_at_least": rob["robust_accuracy"] - ROBUST_SLACK,
    }
    meets = [
        i
        for i, r in enumerate(rows[2:], 2)
        if r["clean_accuracy"] >= target["clean_at_least"]
        and r["robust_accuracy"] >= target["robust_at_least"]
    ]
    close = [
        i for i in range(2, len(rows)) if rows[i]["robust_accuracy"] >= target["robust_at_least"]
    ]
    pool = meets or close or list(range(2, len(rows)))
    chosen = max(pool, key=lambda i: (rows[i]["clean_accuracy"], rows[i]["robust_accuracy"]))
    target["met"] = bool(meets)
    note = None
    if acc["clean_accuracy"] <= rob["clean_accuracy"]:
        note = (
            f"no trade-off on this data: the robust model's clean accuracy "
            f"({rob['clean_accuracy']:.4f}) is at least the accurate model's "
            f"({acc['clean_accuracy']:.4f}), so the target is met without mixing helping"
        )
    return MixResult(eps, norm, suite, len(fit_d), len(eval_d), rows, chosen, target,
                     time.perf_counter() - start, note=note, skipped=skipped,
                     fits=fits[: len(rows) - 2])  # fmt: skip

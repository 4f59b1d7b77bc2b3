"""Detection rates of BEYOND against each attack of a suite and against the adaptive attack:
AUROC of the suspicion score (successful adversarial examples against clean, correctly
classified inputs) and the true-positive rate at the threshold giving ``fpr`` false positives."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks import suite_attacks
from robustlab.data import Dataset
from robustlab.detect.adaptive import adaptive_attack
from robustlab.detect.beyond import Beyond
from robustlab.detect.encoder import Encoder, train_encoder
from robustlab.errors import RobustlabError
from robustlab.results import Metric, metric_dicts
from robustlab.threat import LpBall, parse_norm

ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-t", "square")
Progress = Callable[[str], None]


def auroc(negatives: Tensor, positives: Tensor) -> float | None:
    """P(positive score > negative score) + P(tie) / 2 (Mann-Whitney); None if a side is empty."""
    if len(negatives) == 0 or len(positives) == 0:
        return None
    d = positives.double()[:, None] - negatives.double()[None, :]
    return float(((d > 0).double() + 0.5 * (d == 0).double()).mean())


@dataclass(frozen=True)
class DetectResult:
    """Per attack: how many adversarial examples fool the classifier, AUROC and TPR at the
    clean-calibrated threshold, and the share of inputs where the attack fools the classifier
    and passes the detector; the adaptive attack's row beside them."""

    eps: float
    norm: str
    k: int
    fpr: float
    threshold: float
    clean_accuracy: float
    n_clean: int  # correctly classified inputs attacked
    encoder: dict
    rows: list[dict]  # {attack, adaptive, success_rate, auroc, tpr, undetected_success_rate}
    note: str
    seconds: float

    def to_dict(self) -> dict:
        return {"eps": self.eps, "norm": self.norm, "k": self.k, "fpr": self.fpr,
                "threshold": self.threshold, "clean_accuracy": self.clean_accuracy,
                "n_clean": self.n_clean, "encoder": self.encoder, "rows": self.rows,
                "note": self.note, "seconds": self.seconds}  # fmt: skip

    def metrics(self) -> list[Metric]:
        out = [Metric("clean_accuracy", self.clean_accuracy, True)]
        for r in self.rows:
            out.append(Metric(f"{r['attack']} auroc", r["auroc"], True))
            out.append(Metric(f"{r['attack']} tpr@{self.fpr:g}fpr", r["tpr"], True))
            out.append(Metric(f"{r['attack']} undetected_success_rate",
                              r["undetected_success_rate"], False))  # fmt: skip
        return out

    def metric_dicts(self) -> list[dict]:
        return metric_dicts(self.metrics())


def _row(name: str, adaptive: bool, model: nn.Module, det: Beyond, x_adv: Tensor, y: Tensor,
         clean_scores: Tensor, seed: int) -> dict:  # fmt: skip
    fooled = _fooled(model, x_adv, y)
    s = det.scores(x_adv, seed).score.double()
    flagged = s > det.threshold
    return {
        "attack": name, "adaptive": adaptive, "n_success": int(fooled.sum()),
        "success_rate": float(fooled.double().mean()),
        "auroc": auroc(clean_scores, s[fooled]),
        "tpr": float(flagged[fooled].double().mean()) if bool(fooled.any()) else None,
        "undetected_success_rate": float((fooled & ~flagged).double().mean()),
    }  # fmt: skip


def _adaptive(model, det: Beyond, x, y, threat, steps: int, weights: Sequence[float],
              seed: int, warm: Tensor, say: Progress) -> Tensor:  # fmt: skip
    """The adaptive attack at each detector weight, from a random start and warm-started at
    ``warm`` (the suite's strongest adversarial examples); per input the first result that fools
    the classifier and passes the detector, else one that fools it, else the input."""
    best, done = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    for w, start in [(w, s) for s in (None, warm) for w in weights]:
        say(f"adaptive attack, detector weight {w:g}, {'warm' if start is not None else 'random'}"
            " start")  # fmt: skip
        adv = torch.cat([
            adaptive_attack(model, det.encoder, x[i : i + 128], y[i : i + 128], threat,
                            k=min(det.k, 8), steps=steps, weight=w, seed=seed + i,
                            start=None if start is None else start[i : i + 128])
            for i in range(0, len(x), 128)
        ])  # fmt: skip
        fooled = _fooled(model, adv, y)
        evade = fooled & ~det.detect(adv, seed + 1)  # fresh neighbours, not the evaluation's
        take = ~done & (evade | (fooled & ~_fooled(model, best, y)))
        best[take] = adv[take]
        done |= evade
    return best


def _fooled(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


def _note(rows: list[dict], fpr: float) -> str:
    plain = [r["tpr"] for r in rows if not r["adaptive"] and r["tpr"] is not None]
    ada = next(r for r in rows if r["adaptive"])
    mean = sum(plain) / len(plain) if plain else None
    head = (f"the detector flags {ada['tpr'] if ada['tpr'] is not None else 0:.0%} of the adaptive "
            f"attack's successful examples at {fpr:.0%} false positives"
            + (f", against {mean:.0%} (mean) for the non-adaptive attacks" if mean is not None
               else ""))  # fmt: skip
    if mean is not None and mean < 0.5:
        return head + "; it is weak against the non-adaptive attacks already"
    if ada["tpr"] is None or ada["tpr"] < 0.5 or (mean is not None and ada["tpr"] < mean - 0.2):
        return (
            head + "; it does not hold against an attacker who targets it: count it as "
            "effective against non-adaptive attacks only"
        )
    return head


def detection(
    model: nn.Module,
    data: Dataset,
    encoder_data: Dataset,
    eps: float,
    norm: str = "inf",
    *,
    attacks: Sequence[str] = ATTACKS,
    k: int = 16,
    fpr: float = 0.05,
    encoder_epochs: int = 40,
    adaptive_steps: int = 50,
    adaptive_weights: Sequence[float] = (1.0, 4.0, 16.0),
    encoder: Encoder | None = None,
    encoder_seconds: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> DetectResult:
    """Train BEYOND's encoder on ``encoder_data`` (or use ``encoder``), calibrate its threshold
    at ``fpr`` on the correctly classified inputs of ``data``, and measure it against each of
    ``attacks`` and the adaptive attack (at each of ``adaptive_weights``) inside the ``norm``
    ball of radius ``eps``. ``encoder_seconds``: the encoder's training stops at the first epoch
    past it; ``progress`` hears of each attack (a deadline can stop the run there)."""
    say = progress or (lambda _m: None)
    norm = parse_norm(norm)
    if not 0 < fpr < 1 or k < 1:
        raise RobustlabError(f"fpr in (0, 1) and k >= 1 expected; found {fpr}, {k}")
    start = time.perf_counter()
    model.eval()
    chosen = suite_attacks("fast", int(data.y.max()) + 1, names=list(attacks), seed=seed)
    if encoder is None:
        say(
            f"training the self-supervised encoder ({encoder_epochs} epochs, {len(encoder_data)} images)"
        )
        encoder = train_encoder(
            encoder_data, epochs=encoder_epochs, seed=seed, max_seconds=encoder_seconds
        )
    with torch.no_grad():
        correct = model(data.x).argmax(1) == data.y
    x, y = data.x[correct], data.y[correct]
    if len(x) < 2:
        raise RobustlabError(f"the model classifies {len(x)} inputs of '{data.name}' correctly; "
                             "expected at least 2")  # fmt: skip
    det = Beyond(model, encoder, k).calibrated(x, fpr, seed)
    clean_scores = det.scores(x, seed).score.double()
    threat = LpBall(norm, eps, data.lower, data.upper)
    rows, warm = [], x
    for name, attack in chosen:
        say(f"attack {name} and detection")
        x_adv = attack(model, x, y, threat)
        rows.append(_row(name, False, model, det, x_adv, y, clean_scores, seed))
        if rows[-1]["n_success"] >= max(r["n_success"] for r in rows):
            warm = x_adv
    say("adaptive attack on classifier and detector")
    adv = _adaptive(model, det, x, y, threat, adaptive_steps, adaptive_weights, seed, warm, say)
    rows.append(_row("adaptive (classifier + detector, EOT)", True, model, det, adv, y,
                     clean_scores, seed))  # fmt: skip
    return DetectResult(eps, norm, k, fpr, det.threshold, float(correct.double().mean()), len(x),
                        encoder.to_dict(), rows, _note(rows, fpr), time.perf_counter() - start)  # fmt: skip

"""Evaluate trained models the same way and set them side by side: clean accuracy, robust accuracy
under the attack engine's suite, and certified accuracy from the sound bound engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.threat import LpBall
from robustlab.train.loop import TrainResult, train

BOUND_METHODS = ("ibp", "crown")


def evaluate_trained(
    model: nn.Module,
    data: Dataset,
    eps: float,
    *,
    suite: str = "fast",
    attacks: Sequence[str] | None = None,
    bound_methods: Sequence[str] = BOUND_METHODS,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Clean accuracy, robust accuracy (``robustlab.attacks.evaluate``, per-sample worst case over
    the suite) and certified accuracy (``robustlab.bounds.certify``; certified by any of
    ``bound_methods``) at Linf ``eps``."""
    from robustlab.attacks import evaluate
    from robustlab.bounds import certify

    start = time.perf_counter()
    attack = evaluate(model, data, [eps], "inf", suite=suite, attacks=attacks,
                      batch_size=batch_size, seed=seed)  # fmt: skip
    t_attack = time.perf_counter() - start
    threat = LpBall("inf", eps, data.lower, data.upper)
    union = torch.zeros(len(data), dtype=torch.bool)
    per_method = {}
    for m in bound_methods:
        r = certify(model, data, threat, m, batch_size=batch_size)
        union |= torch.tensor(r.certified, dtype=torch.bool)
        per_method[m] = r.certified_accuracy
    return {
        "eps": eps,
        "clean_accuracy": attack.clean_accuracy,
        "robust_accuracy": attack.robust_accuracy,
        "certified_accuracy": float(union.float().mean()),
        "certified_by": per_method,
        "attacks": attack.attacks,
        "flags": attack.flags,
        "seconds": {"attack": t_attack, "bounds": time.perf_counter() - start - t_attack},
    }


@dataclass(frozen=True)
class Comparison:
    """One row per training method, all on the same architecture, data and eps."""

    eps: float
    rows: list[dict]  # method, clean/robust/certified accuracy, train_seconds, epochs

    def to_dict(self) -> dict:
        return {"eps": self.eps, "rows": self.rows}

    def markdown(self) -> str:
        """The table as Markdown (for notes and benchmark output)."""
        head = "| method | clean | robust (attack) | certified (bounds) | train s | epochs |"
        lines = [head, "|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r['method']} | {r['clean_accuracy']:.3f} | {r['robust_accuracy']:.3f} | "
                f"{r['certified_accuracy']:.3f} | {r['train_seconds']:.1f} | {r['epochs']} |"
            )
        return "\n".join(lines)


def comparison_row(result: TrainResult, evaluation: dict) -> dict:
    """A comparison row from a training result and its evaluation."""
    return {
        "method": result.method,
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "certified_accuracy": evaluation["certified_accuracy"],
        "certified_by": evaluation["certified_by"],
        "train_seconds": result.seconds,
        "epochs": result.epochs,
    }


def compare(
    build: Callable[[], nn.Module],
    train_data: Dataset,
    test_data: Dataset,
    methods: Sequence[str],
    eps: float,
    *,
    epochs: int = 20,
    suite: str = "fast",
    attacks: Sequence[str] | None = None,
    on_trained: Callable[[str, nn.Module, TrainResult], nn.Module | None] | None = None,
    **train_kwargs,
) -> Comparison:
    """Train a fresh model from ``build()`` with each method and evaluate each on ``test_data``.

    ``on_trained(method, model, result)`` may export the model and return the module to evaluate
    (e.g. the re-loaded ONNX file); by default the trained module itself is evaluated.
    """
    rows = []
    for name in methods:
        model = build()
        result = train(model, train_data, name, eps, epochs=epochs, eval_data=test_data,
                       **train_kwargs)  # fmt: skip
        evaluated = on_trained(name, model, result) if on_trained else None
        ev = evaluate_trained(
            evaluated or model.eval(), test_data, eps, suite=suite, attacks=attacks
        )
        rows.append(comparison_row(result, ev))
    return Comparison(eps, rows)

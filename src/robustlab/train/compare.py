"""Evaluate trained models the same way and set them side by side: clean accuracy, robust accuracy
under the attack engine's suite, and certified accuracy from the sound bound engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.attacks import evaluate
from robustlab.bounds import certify
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.results import Metric
from robustlab.threat import LpBall
from robustlab.train.loop import TrainResult, train
from robustlab.train.methods import get_method

# a point is certified by any of these; lipschitz (margin / L) is skipped on networks its bound
# does not support
BOUND_METHODS = ("ibp", "crown", "lipschitz")


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
    l2_eps: float | None = None,
) -> dict:
    """Clean accuracy, robust accuracy (``robustlab.attacks.evaluate``, per-sample worst case over
    the suite) and certified accuracy (``robustlab.bounds.certify``; certified by any of
    ``bound_methods``) at Linf ``eps``, and with ``l2_eps`` the same at that L2 radius (keys
    ``robust_l2_accuracy``, ``certified_l2_accuracy``, ``certified_l2_by``)."""
    start = time.perf_counter()
    out = {"eps": eps}
    norms = [("inf", eps, "")] + ([("2", l2_eps, "_l2")] if l2_eps is not None else [])
    t_attack = 0.0
    for norm, e, suffix in norms:
        t0 = time.perf_counter()
        attack = evaluate(model, data, [e], norm, suite=suite, attacks=attacks,
                          batch_size=batch_size, seed=seed)  # fmt: skip
        t_attack += time.perf_counter() - t0
        union, per_method, lip = _certified(model, data, LpBall(norm, e, data.lower, data.upper),
                                            bound_methods, batch_size)  # fmt: skip
        out[f"robust{suffix}_accuracy"] = attack.robust_accuracy
        out[f"certified{suffix}_accuracy"] = float(union.float().mean())
        out[f"certified{suffix}_by"] = per_method
        if norm == "inf":
            out.update(clean_accuracy=attack.clean_accuracy, attacks=attack.attacks,
                       flags=attack.flags, lipschitz_bound=lip)  # fmt: skip
    if l2_eps is not None:
        out["l2_eps"] = l2_eps
    out["seconds"] = {"attack": t_attack, "bounds": time.perf_counter() - start - t_attack}
    return out


def _certified(model, data, threat, methods, batch_size):
    """Points certified by any of ``methods``, each method's certified accuracy (None where the
    Lipschitz bound does not support the network), and the global Lipschitz bound if computed."""
    union = torch.zeros(len(data), dtype=torch.bool)
    per_method: dict[str, float | None] = {}
    lipschitz = None
    for m in methods:
        try:
            r = certify(model, data, threat, m, batch_size=batch_size)
        except RobustlabError:
            if m != "lipschitz":
                raise
            per_method[m] = None
            continue
        union |= torch.tensor(r.certified, dtype=torch.bool)
        per_method[m] = r.certified_accuracy
        lipschitz = r.lipschitz if r.lipschitz is not None else lipschitz
    return union, per_method, lipschitz


@dataclass(frozen=True)
class Comparison:
    """One row per training method, all on the same architecture, data and eps."""

    eps: float
    rows: list[dict]  # method, clean/robust/certified accuracy, train_seconds, epochs

    def to_dict(self) -> dict:
        return {"eps": self.eps, "rows": self.rows}

    def metrics(self) -> list[Metric]:
        """Per method: ``<method> <key>`` for each accuracy and the training time it has."""
        keys = {"clean_accuracy": True, "robust_accuracy": True, "certified_accuracy": True,
                "train_seconds": False, "robust_l2_accuracy": True,
                "certified_l2_accuracy": True}  # fmt: skip
        return [Metric(f"{r['method']} {key}", r[key], higher)
                for r in self.rows for key, higher in keys.items() if key in r]  # fmt: skip

    def markdown(self) -> str:
        """The table as Markdown (for notes and benchmark output); L2 columns when evaluated."""
        l2 = any("certified_l2_accuracy" in r for r in self.rows)
        head = "| method | clean | robust (attack) | certified (bounds) |"
        head += " robust L2 | certified L2 |" if l2 else ""
        lines = [head + " train s | epochs |", "|---" * (8 if l2 else 6) + "|"]
        for r in self.rows:
            cells = [r["clean_accuracy"], r["robust_accuracy"], r["certified_accuracy"]]
            cells += [r.get("robust_l2_accuracy"), r.get("certified_l2_accuracy")] if l2 else []
            text = " | ".join("-" if v is None else f"{v:.3f}" for v in cells)
            lines.append(f"| {r['method']} | {text} | {r['train_seconds']:.1f} | {r['epochs']} |")
        return "\n".join(lines)


def comparison_row(result: TrainResult, evaluation: dict) -> dict:
    """A comparison row from a training result and its evaluation."""
    return {
        "method": result.method,
        "clean_accuracy": evaluation["clean_accuracy"],
        "robust_accuracy": evaluation["robust_accuracy"],
        "certified_accuracy": evaluation["certified_accuracy"],
        "certified_by": evaluation["certified_by"],
        "lipschitz_bound": evaluation.get("lipschitz_bound"),
        **{
            k: evaluation[k]
            for k in ("robust_l2_accuracy", "certified_l2_accuracy", "certified_l2_by")
            if k in evaluation
        },
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
    l2_eps: float | None = None,
    method_kwargs: dict[str, dict] | None = None,
    on_trained: Callable[[str, nn.Module, TrainResult], nn.Module | None] | None = None,
    **train_kwargs,
) -> Comparison:
    """Train a fresh model from ``build()`` with each method (``method_kwargs[name]``: its
    hyperparameters) and evaluate each on ``test_data`` (also at L2 ``l2_eps`` when given).

    ``on_trained(method, model, result)`` may export the model and return the module to evaluate
    (e.g. the re-loaded ONNX file); by default the trained module itself is evaluated.
    """
    rows = []
    for name in methods:
        model = build()
        method = get_method(name, **(method_kwargs or {}).get(name, {}))
        result = train(model, train_data, method, eps, epochs=epochs, eval_data=test_data,
                       **train_kwargs)  # fmt: skip
        evaluated = on_trained(name, model, result) if on_trained else None
        ev = evaluate_trained(evaluated or model.eval(), test_data, eps, suite=suite,
                              attacks=attacks, l2_eps=l2_eps)  # fmt: skip
        rows.append(comparison_row(result, ev))
    return Comparison(eps, rows)

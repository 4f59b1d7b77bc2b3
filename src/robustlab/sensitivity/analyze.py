"""Network sensitivity in one call: per layer the Hessian trace (Hutchinson) and top eigenvalue
(power iteration), the diagonal empirical Fisher, accuracy under relative weight noise, and the
model emulated in lower precision, with the rank correlation between the Hessian traces and the
measured per-layer drops in each layer-by-layer format."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from robustlab.data import Dataset
from robustlab.results import Metric, metric_dicts
from robustlab.sensitivity.fisher import fisher_diagonal
from robustlab.sensitivity.hessian import hutchinson, top_eigenvalues
from robustlab.sensitivity.layers import layers
from robustlab.sensitivity.noise import LEVELS, noise_curves
from robustlab.sensitivity.precision_eval import _clean, evaluate_precision, rank_correlation

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SensitivityResult:
    """Per-layer sensitivities of a model's parameters, with their cost."""

    clean_accuracy: float
    loss: float
    layers: list[dict]  # name, kind, parameters, hessian_trace (+ interval), top_eigenvalue, fisher
    whole_model: dict  # the whole model's trace, top eigenvalue, Fisher trace
    hutchinson: dict  # samples, hvps, seconds
    power_iteration: dict  # iterations, tol, passes, seconds
    fisher: dict | None  # seconds
    noise: dict | None  # NoiseCurves.to_dict()
    precision: dict | None  # PrecisionResult.to_dict()
    correlations: list[dict]  # per layer format: Spearman's rho, traces vs measured drops
    seconds: float

    def to_dict(self) -> dict:
        return {**self.__dict__, "metrics": metric_dicts(self.metrics())}

    def metrics(self) -> list[Metric]:
        m = [
            Metric("clean_accuracy", self.clean_accuracy, True),
            Metric("hessian_trace", self.whole_model["hessian_trace"], False),
            Metric("top_hessian_eigenvalue", self.whole_model["top_eigenvalue"], False),
            Metric("fisher_trace", self.whole_model.get("fisher_trace"), False),
        ]
        if self.noise:
            for curve in self.noise["curves"][:1]:  # the whole model's
                last = curve["points"][-1]
                at = f"weight noise {last['sigma']:g}"
                m += [Metric(f"clean_accuracy@{at}", last["clean_accuracy"], True),
                      Metric(f"robust_accuracy@{at}", last["robust_accuracy"], True)]  # fmt: skip
        if self.precision:
            for row in self.precision["rows"]:
                if row["scope"] == "model" and row["activations"]:
                    m.append(Metric(f"{row['format']} clean_accuracy", row["clean_accuracy"], True))
                    m.append(
                        Metric(f"{row['format']} robust_accuracy", row["robust_accuracy"], True)
                    )
        for c in self.correlations:
            m.append(Metric(f"spearman trace vs {c['format']} loss increase",
                            c["trace_vs_loss_increase"], True))  # fmt: skip
        return m


def _correlation(per_layer: list[dict], fmt: str) -> dict | None:
    rows = [r for r in per_layer if r.get(f"{fmt}_loss_increase") is not None]
    if not rows:
        return None
    trace = [r["hessian_trace"] for r in rows]
    hawq = [r["hessian_trace"] / r["parameters"] * r[f"{fmt}_weight_error"] for r in rows]
    loss = [r[f"{fmt}_loss_increase"] for r in rows]
    drop = [r[f"{fmt}_clean_drop"] for r in rows]
    return {
        "format": fmt,
        "layers": [r["name"] for r in rows],
        "trace_vs_loss_increase": rank_correlation(trace, loss),
        "trace_vs_accuracy_drop": rank_correlation(trace, drop),
        "hawq_vs_loss_increase": rank_correlation(hawq, loss),
        "hawq": hawq,
    }


def analyze(
    model: nn.Module,
    data: Dataset,
    *,
    samples: int = 64,
    iterations: int = 50,
    tol: float = 1e-4,
    fisher: bool = True,
    noise_levels: Sequence[float] = LEVELS,
    draws: int = 3,
    eps: float | None = None,
    robust_n: int = 100,
    suite: str = "fast",
    formats: Sequence[str] = ("float16", "bfloat16", "int8"),
    layer_formats: Sequence[str] = ("int8",),
    certify_methods: Sequence[str] = ("ibp", "crown"),
    certify_n: int | None = None,
    calibration: Dataset | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
) -> SensitivityResult:
    """Every sensitivity measure of ``model`` on ``data`` (see the module docstring). Robust
    numbers need ``eps`` (Linf); empty ``noise_levels`` or formats skip those parts."""
    say = progress or (lambda _m: None)
    start = time.perf_counter()
    model = model.eval()
    groups = layers(model)
    say(f"Hessian traces: {samples} Hutchinson samples x {len(groups)} layers")
    hut = hutchinson(model, data, samples=samples, batch_size=batch_size, seed=seed, groups=groups)
    say(f"top Hessian eigenvalues: power iteration, up to {iterations} passes")
    t0 = time.perf_counter()
    eig, eig_model, passes = top_eigenvalues(model, data, iterations=iterations, tol=tol,
                                             batch_size=batch_size, seed=seed, groups=groups)  # fmt: skip
    eig_seconds = time.perf_counter() - t0
    fish = None
    if fisher:
        say("diagonal empirical Fisher")
        fish = fisher_diagonal(model, data, batch_size=batch_size, groups=groups)
    per_layer = []
    for k, g in enumerate(groups):
        t = hut.layers[k]
        per_layer.append({
            **g.to_dict(),
            "hessian_trace": t.trace, "hessian_trace_stderr": t.stderr,
            "hessian_trace_ci": [t.ci_low, t.ci_high],
            "top_eigenvalue": eig[k].eigenvalue, "top_eigenvalue_converged": eig[k].converged,
            "fisher_trace": fish.layers[k]["trace"] if fish else None,
            "fisher_mean": fish.layers[k]["mean"] if fish else None,
        })  # fmt: skip
    noise = None
    if len(noise_levels):
        noise = noise_curves(model, data, levels=noise_levels, draws=draws, eps=eps,
                             robust_n=robust_n, suite=suite, groups=groups,
                             batch_size=batch_size, seed=seed, progress=say).to_dict()  # fmt: skip
    precision, correlations = None, []
    if len(formats) or len(layer_formats):
        prec = evaluate_precision(model, data, formats=formats, layer_formats=layer_formats,
                                  eps=eps, suite=suite, robust_n=robust_n,
                                  certify_methods=certify_methods, certify_n=certify_n,
                                  calibration=calibration, batch_size=batch_size, seed=seed,
                                  progress=say)  # fmt: skip
        precision = prec.to_dict()
        by_name = {r["name"]: r for r in per_layer}
        for row in prec.rows:
            if row["scope"] != "model" and row["scope"] in by_name:
                for key in ("clean_drop", "loss_increase", "robust_accuracy",
                            "certified_accuracy", "weight_error"):  # fmt: skip
                    by_name[row["scope"]][f"{row['format']}_{key}"] = row[key]
        correlations = [c for f in layer_formats if (c := _correlation(per_layer, f))]
    clean = precision["baseline"] if precision else None
    if clean is None:
        acc, loss = _clean(model, data, batch_size)
    else:
        acc, loss = clean["clean_accuracy"], clean["loss"]
    return SensitivityResult(
        clean_accuracy=acc,
        loss=loss,
        layers=per_layer,
        whole_model={
            "hessian_trace": hut.total.trace,
            "hessian_trace_stderr": hut.total.stderr,
            "hessian_trace_ci": [hut.total.ci_low, hut.total.ci_high],
            "top_eigenvalue": eig_model.eigenvalue,
            "top_eigenvalue_converged": eig_model.converged,
            "fisher_trace": fish.trace if fish else None,
        },
        hutchinson={"samples": hut.samples, "hvps": hut.hvps, "seconds": hut.seconds},
        power_iteration={
            "iterations": iterations,
            "tol": tol,
            "passes": passes,
            "seconds": eig_seconds,
        },  # fmt: skip
        fisher={"seconds": fish.seconds} if fish else None,
        noise=noise,
        precision=precision,
        correlations=correlations,
        seconds=time.perf_counter() - start,
    )

"""The ``robustlab explain`` job: load, explain, assemble the report dict."""

from __future__ import annotations

import dataclasses

import torch

from robustlab.attacks.base import predict
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.explain.base import REGISTRY, get_explainer
from robustlab.explain.proof_features import proof_features
from robustlab.explain.sharded import explain_sharded
from robustlab.jobs.common import prepare, report_head
from robustlab.results import metric_dicts
from robustlab.shards import Backend

STEPS_FIELD = {"integrated-gradients": "n_steps"}  # --steps: path steps
SAMPLES_FIELD = {
    "smoothgrad": "n_samples",
    "sobol": "n_designs",
    "osa-das": "n_augment",
}  # --samples: draws


def parse_target(text: str | int | None, labels: torch.Tensor):
    """``predicted`` (None), ``label`` (the data's labels) or a class index."""
    if text is None or text == "predicted":
        return None
    if text == "label":
        return labels
    try:
        return int(text)
    except (TypeError, ValueError):
        raise RobustlabError(
            f"target expects 'predicted', 'label' or a class index; found {text!r}", param="target"
        ) from None


METHOD_ALIASES = {"ig": "integrated-gradients", "ixg": "input-x-gradient"}


def make_explainer(
    method: str, *, steps: int | None, batch_size: int, seed: int, samples: int | None = None
):
    """The registered explainer with the CLI's knobs: ``steps`` is Integrated Gradients' path
    steps, ``samples`` SmoothGrad's noise samples or Sobol's designs."""
    method = canonical(method, REGISTRY, METHOD_ALIASES)
    if method not in REGISTRY:
        raise unknown("explanation method", method, REGISTRY)
    fields = {f.name for f in dataclasses.fields(REGISTRY[method])}
    kwargs: dict = {"batch_size": batch_size}
    if "seed" in fields:
        kwargs["seed"] = seed
    for flag, value, table in (
        ("steps", steps, STEPS_FIELD),
        ("samples", samples, SAMPLES_FIELD),
    ):
        if value is None:
            continue
        if method not in table:
            raise RobustlabError(
                f"{flag} applies to {', '.join(table)}; found method '{method}'", param=flag
            )
        if value < 1:
            raise RobustlabError(f"{flag} must be a positive integer; found {value}", param=flag)
        kwargs[table[method]] = value
    return get_explainer(method, **kwargs)


def explain_job(
    model_src,
    data_src,
    method: str,
    *,
    n: int | None = None,
    steps: int | None = None,
    samples: int | None = None,
    target: str | int | None = "predicted",
    batch_size: int = 512,
    seed: int = 0,
    device="cpu",
    backend: Backend = Backend(),
    progress=None,
) -> dict:
    """Attributions of every input; keys ``method``, ``attributions``, ``n_forward``,
    ``n_backward``, ``seconds``, ``delta`` (integrated gradients), ``classes``. ``backend``: the
    inputs in shards, in this process or on Dask (``explain.sharded``: the same numbers)."""

    method = canonical(method, REGISTRY, METHOD_ALIASES)
    explainer = make_explainer(
        method, steps=steps, samples=samples, batch_size=batch_size, seed=seed
    )
    model, data = prepare(model_src, data_src, n, device)
    tgt = parse_target(target, data.y)
    if progress:
        progress(f"{method} on {len(data)} examples")
    result = explain_sharded(explainer, model.module, data.x, tgt, backend=backend,
                             progress=progress)  # fmt: skip
    params = {
        k: v
        for k, v in dataclasses.asdict(explainer).items()
        if isinstance(v, (int, float, str, bool, type(None))) and k != "shard"
    }
    settings = {"method": method, "target": "predicted" if target is None else target, **params}
    if backend.name != "local" or backend.shard_size:
        settings["shards"] = {"backend": backend.name, "shard_size": backend.shard_size}
    report = report_head("explain", model, data, settings)
    report["clean_accuracy"] = float((predict(model.module, data.x) == data.y).float().mean())
    report.update(result.to_dict())
    report["metrics"] = metric_dicts(result.metrics())
    return report


def proofs_job(
    model_src, data_src, eps: float, *, n: int | None = None, limit: int = 4, device="cpu"
) -> dict:
    """``certify --explain-proofs``: proof features of the first ``limit`` certified inputs at
    ``eps``; keys ``eps``, ``points`` (each ProofFeatures.to_dict() with its ``index``)."""

    model, data = prepare(model_src, data_src, n, device)
    points = []
    with torch.no_grad():
        right = (model.module(data.x).argmax(1) == data.y).tolist()
    for i, ok in enumerate(right):
        if len(points) == limit:
            break
        if ok:
            r = proof_features(model.module, data.x[i], int(data.y[i]), eps,
                               lower=data.lower, upper=data.upper)  # fmt: skip
            if r.certified:
                points.append({"index": i, **r.to_dict()})
    return {"eps": eps, "points": points}

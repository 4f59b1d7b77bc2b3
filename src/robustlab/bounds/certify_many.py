"""Certified accuracy over several eps and several bound methods at once: a point counts as
certified at an eps when any of the methods proves it (the union), with the linearised network's
tightness (Mao et al. 2023, arXiv:2306.10426) for Linf. What ``robustlab certify`` reports,
reachable from Python."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from robustlab.bounds.certify import CERTIFY_METHODS, PRECISIONS, certify
from robustlab.bounds.tightness import tightness
from robustlab.data import Dataset
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.inputs import ModelLike, fit
from robustlab.results import Metric, curve_metrics, float32_rate
from robustlab.shards import Backend, run_shards, shard_bounds
from robustlab.threat import LpBall, eps_values, parse_norm

TIGHTNESS_SAMPLE = 64  # inputs whose tightness ratio is averaged


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Bound methods from ``"ibp,crown"`` or a list; each must be known."""
    methods = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    methods = [canonical(m, CERTIFY_METHODS) for m in methods]  # alpha_crown: alpha-crown
    for m in methods:
        if m not in CERTIFY_METHODS:
            raise unknown("bound method", m, CERTIFY_METHODS)
    if not methods:
        raise RobustlabError("expected at least one bound method")
    return methods


@dataclass(frozen=True)
class CertifiedCurve:
    """Certified accuracy at each eps for one or more bound methods (union over the methods)."""

    norm: str
    methods: list[str]
    eps: list[float]
    clean_accuracy: float
    curve: list[dict]  # {eps, certified_accuracy}: certified by any method
    per_method: list[dict]  # CertifyResult.to_dict() per eps and method, without "certified"
    tightness: float | None  # Linf only: mean tightness of the linearised network
    certified: list[list[bool]] = field(repr=False, default_factory=list)  # per eps, per example

    @property
    def certified_accuracy(self) -> float:
        """At the first eps given."""
        return self.curve[0]["certified_accuracy"]

    def to_dict(self) -> dict:
        return {
            "norm": self.norm,
            "method": self.methods[0] if len(self.methods) == 1 else self.methods,
            "clean_accuracy": self.clean_accuracy,
            "certified_accuracy": self.certified_accuracy,
            "curve": self.curve,
            "per_method": self.per_method,
            "tightness": self.tightness,
        }

    def metrics(self) -> list[Metric]:
        """Clean accuracy and certified accuracy (any method) at each eps."""
        return [Metric("clean_accuracy", self.clean_accuracy, True), *curve_metrics(self.curve)]


def certify_many(
    model: ModelLike,
    data: Dataset,
    eps: Sequence[float],
    norm: str = "inf",
    methods: str | Sequence[str] = "crown",
    *,
    batch_size: int = 256,
    precision: str = "float64",
    progress: Callable[[str], None] | None = None,
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
    backend: Backend = Backend(),
) -> CertifiedCurve:
    """``certify`` with each method at each eps (an Lp ball in the data's value range); a point is
    certified at an eps when any method proves it. Tightness (Linf only) is eps-independent and
    computed once, at the first eps > 0, on the first ``TIGHTNESS_SAMPLE`` inputs. ``backend``:
    the data in shards, in this process or on Dask (``robustlab.shards``); bounds are
    deterministic, so every backend and shard size gives the same certified points."""
    norm, methods = parse_norm(norm), parse_methods(methods)
    if precision not in PRECISIONS:
        raise RobustlabError(f"precision must be float64 or float32; found '{precision}'")
    eps = eps_values(eps, "eps")
    module, data = fit(model, data, device=device)
    bounds = shard_bounds(len(data), backend.shard_size)
    settings = (eps, norm, methods, batch_size, precision)
    if len(bounds) == 1 and backend.name == "local":
        per_method, certified = _certify_all(module, data, *settings, progress)
    else:
        shards = [(Dataset(data.name, data.x[a:b], data.y[a:b], data.lower, data.upper), settings)
                  for a, b in bounds]  # fmt: skip

        def done(k: int, total: int) -> None:
            if progress:
                progress(f"shard {k} of {total} done")

        parts = run_shards(_certify_shard, shards, backend, shared=(module,), done=done)
        per_method = _merged_records(parts)
        certified = [sum((p[1][k] for p in parts), []) for k in range(len(eps))]
    curve = [
        {"eps": e, "certified_accuracy": float(torch.tensor(c, dtype=torch.float32).mean())}
        for e, c in zip(eps, certified, strict=True)
    ]
    tight = None
    if norm == "inf":  # Mao et al.'s tightness is defined for Linf boxes
        sample = data.x[: min(len(data), TIGHTNESS_SAMPLE)]
        e0 = next((e for e in eps if e > 0), None)
        tight = None if e0 is None else float(tightness(module, sample, e0).mean())
    clean = per_method[0]["clean_accuracy"]
    return CertifiedCurve(norm, methods, eps, clean, curve, per_method, tight, certified)


def _certify_all(module, data, eps, norm, methods, batch_size, precision, progress=None):
    """Per eps and method, ``certify``'s record (without the points); per eps, the union."""
    per_method, certified = [], []
    for e in eps:
        threat = LpBall(norm, e, data.lower, data.upper)
        union = None
        for m in methods:
            if progress:
                progress(f"{m} bounds on {len(data)} examples at eps {e:g}")
            r = certify(module, data, threat, m, batch_size=batch_size, precision=precision)
            cert = torch.tensor(r.certified)
            union = cert if union is None else union | cert
            per_method.append({k: v for k, v in r.to_dict().items() if k != "certified"})
        certified.append(union.tolist())
    return per_method, certified


def _certify_shard(module, shard):
    """One shard's records and certified points (a Dask task)."""
    data, settings = shard
    return _certify_all(module, data, *settings)


def _merged_records(parts) -> list[dict]:
    """The shards' per-method records as one: counts from the rates, seconds summed."""
    out = []
    for records in zip(*(p[0] for p in parts), strict=True):
        n = sum(r["n"] for r in records)
        merged = dict(records[0], n=n, seconds=sum(r["seconds"] for r in records))
        for rate in ("clean_accuracy", "certified_accuracy"):
            merged[rate] = float32_rate(sum(round(r[rate] * r["n"]) for r in records), n)
        out.append(merged)
    return out

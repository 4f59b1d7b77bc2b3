"""``robustlab certify``: certified accuracy from sound bounds for one or more methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustlab.bounds import CERTIFY_METHODS as METHODS
from robustlab.bounds import certify
from robustlab.bounds.certify import PRECISIONS
from robustlab.bounds.tightness import tightness
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.jobs.common import Progress, _base, check_eps, check_eps_on, prepare
from robustlab.threat import LpBall, parse_norm


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Bound methods from ``"ibp,crown"`` or a list; each must be known."""
    methods = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    methods = [canonical(m, METHODS) for m in methods]  # alpha_crown: alpha-crown
    for m in methods:
        if m not in METHODS:
            raise unknown("bound method", m, METHODS)
    if not methods:
        raise RobustlabError("expected at least one bound method")
    return methods


def certify_job(
    model_src,
    data_src,
    eps: Sequence[float],
    norm: str = "inf",
    *,
    method: str | Sequence[str] = "crown",
    n: int | None = None,
    batch_size: int = 256,
    precision: str = "float64",
    progress: Progress | None = None,
) -> dict:
    """Certified accuracy at each eps for one or more bound methods; keys ``clean_accuracy``,
    ``certified_accuracy`` (first eps; a point certified by any of the methods), ``curve``,
    ``per_method``, ``tightness``."""
    eps, norm = check_eps(eps), parse_norm(norm)
    methods = parse_methods(method)
    if precision not in PRECISIONS:
        raise RobustlabError(f"precision must be float64 or float32; found '{precision}'")
    model, data = prepare(model_src, data_src, n)
    check_eps_on(eps, norm, data)
    curve, per_method = [], []
    for e in eps:
        threat = LpBall(norm, e, data.lower, data.upper)
        union = None
        for m in methods:
            if progress:
                progress(f"{m} bounds on {len(data)} examples at eps {e:g}")
            r = certify(model.module, data, threat, m, batch_size=batch_size, precision=precision)
            cert = torch.tensor(r.certified)
            union = cert if union is None else union | cert
            per_method.append({k: v for k, v in r.to_dict().items() if k != "certified"})
        curve.append({"eps": e, "certified_accuracy": float(union.float().mean())})
    clean = per_method[0]["clean_accuracy"]
    tight = None
    if norm == "inf":  # Mao et al.'s tightness is defined for Linf boxes
        sample = data.x[: min(len(data), 64)]
        # the linearised network's ratio does not depend on eps; computed at the first eps > 0
        e0 = next((e for e in eps if e > 0), None)
        tight = None if e0 is None else float(tightness(model.module, sample, e0).mean())
    settings = {"methods": methods, "norm": norm, "eps": eps, "precision": precision}
    report = _base("certify", model, data, settings)
    report.update(
        norm=norm,
        method=methods[0] if len(methods) == 1 else methods,
        clean_accuracy=clean,
        certified_accuracy=curve[0]["certified_accuracy"],
        curve=curve,
        per_method=per_method,
        tightness=tight,
    )
    return report

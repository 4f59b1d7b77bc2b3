"""``robustlab certify``: certified accuracy from sound bounds for one or more methods (the
union over methods and the tightness are computed by ``bounds.certify_many``)."""

from __future__ import annotations

from collections.abc import Sequence

from robustlab.bounds.certify import PRECISIONS
from robustlab.bounds.certify_many import certify_many
from robustlab.bounds.certify_many import parse_methods as parse_methods
from robustlab.errors import RobustlabError
from robustlab.jobs.common import Progress, check_eps, check_eps_on, prepare, report_head
from robustlab.results import metric_dicts
from robustlab.shards import Backend
from robustlab.threat import parse_norm


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
    device="cpu",
    backend: Backend = Backend(),
    progress: Progress | None = None,
) -> dict:
    """Certified accuracy at each eps for one or more bound methods; keys ``clean_accuracy``,
    ``certified_accuracy`` (first eps; a point certified by any of the methods), ``curve``,
    ``per_method``, ``tightness``, ``metrics``."""
    eps, norm = check_eps(eps), parse_norm(norm)
    methods = parse_methods(method)
    if precision not in PRECISIONS:
        raise RobustlabError(f"precision must be float64 or float32; found '{precision}'")
    model, data = prepare(model_src, data_src, n, device)
    check_eps_on(eps, norm, data)
    result = certify_many(model.module, data, eps, norm, methods, batch_size=batch_size,
                          precision=precision, progress=progress, backend=backend)  # fmt: skip
    settings = {"methods": methods, "norm": norm, "eps": eps, "precision": precision}
    if backend.name != "local" or backend.shard_size:
        settings["shards"] = {"backend": backend.name, "shard_size": backend.shard_size}
    report = report_head("certify", model, data, settings)
    report.update(result.to_dict())
    report["metrics"] = metric_dicts(result.metrics(), keep_missing=True)
    return report

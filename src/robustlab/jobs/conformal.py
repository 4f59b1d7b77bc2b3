"""What ``robustlab conformal`` does: load, calibrate and measure the sets, assemble the report."""

from __future__ import annotations

from collections.abc import Callable

from robustlab.conformal.evaluate import conformal
from robustlab.jobs.common import check_eps, prepare, report_head
from robustlab.threat import parse_norm

Progress = Callable[[str], None]


def conformal_job(
    model_src,
    data_src,
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
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """Split-conformal, RSCP+ and VRCP sets of a model (``robustlab.conformal.conformal``); keys
    ``rows`` ({method, condition, coverage, mean_size}), ``thresholds``, ``robust_covered``,
    ``metrics``."""
    (eps,) = check_eps([eps])
    norm = parse_norm(norm)
    model, data = prepare(model_src, data_src, n, device)
    result = conformal(model.module, data, alpha, eps, norm, sigma=sigma, n_samples=n_samples,
                       beta=beta, bound_method=bound_method, cal_share=cal_share, steps=steps,
                       seed=seed, batch_size=batch_size, progress=progress)  # fmt: skip
    settings = {
        "alpha": alpha, "eps": eps, "norm": norm, "sigma": sigma, "n_samples": n_samples,
        "beta": beta, "bound_method": bound_method, "cal_share": cal_share, "steps": steps,
        "seed": seed, "batch_size": batch_size,
    }  # fmt: skip
    report = report_head("conformal", model, data, settings)
    report.update(result.to_dict())
    report["metrics"] = result.metric_dicts()
    return report

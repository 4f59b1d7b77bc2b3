"""What ``robustlab sensitivity`` does: load, analyse, and assemble the report dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from robustlab.data import load_data
from robustlab.errors import RobustlabError
from robustlab.jobs.common import check_eps, prepare, report_head
from robustlab.sensitivity.analyze import analyze
from robustlab.sensitivity.noise import LEVELS, check_levels
from robustlab.sensitivity.precision import parse_formats

Progress = Callable[[str], None]


def _positive(**values) -> None:
    for name, v in values.items():
        if v is not None and v < 1:
            raise RobustlabError(f"{name} must be a positive integer; found {v}")


def sensitivity_job(
    model_src,
    data_src,
    *,
    eps: float | None = None,
    n: int | None = None,
    samples: int = 64,
    iterations: int = 50,
    noise_levels: Sequence[float] = LEVELS,
    draws: int = 3,
    robust_n: int = 100,
    suite: str = "fast",
    formats: str | Sequence[str] = "float16,bfloat16,int8",
    layer_formats: str | Sequence[str] = "int8",
    certify_n: int | None = 100,
    calibration=None,
    batch_size: int = 256,
    seed: int = 0,
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """Per-layer sensitivity of a model (``robustlab.sensitivity.analyze``); keys
    ``clean_accuracy``, ``layers``, ``model``, ``noise``, ``precision``, ``correlation``,
    ``metrics``."""
    if eps is not None:
        (eps,) = check_eps([eps])
    _positive(samples=samples, iterations=iterations, draws=draws, robust_n=robust_n,
              certify_n=certify_n, batch_size=batch_size)  # fmt: skip
    levels = check_levels(noise_levels, "noise_levels")
    formats, layer_formats = parse_formats(formats), parse_formats(layer_formats, "layer_formats")
    model, data = prepare(model_src, data_src, n, device)
    calib = None
    if calibration is not None:
        calib = load_data(calibration, model.input_shape)
        if model.input_shape is not None:
            calib = calib.matched_to(model.input_shape)
        calib = calib.to(data.x.device)
    result = analyze(
        model.module,
        data,
        samples=samples,
        iterations=iterations,
        noise_levels=levels,
        draws=draws,
        eps=eps,
        robust_n=robust_n,
        suite=suite,
        formats=formats,
        layer_formats=layer_formats,
        certify_n=certify_n,
        calibration=calib,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    settings = {
        "eps": eps,
        "norm": "inf",
        "samples": samples,
        "iterations": iterations,
        "noise_levels": levels,
        "draws": draws,
        "robust_n": robust_n,
        "suite": suite,
        "formats": formats,
        "layer_formats": layer_formats,
        "certify_n": certify_n,
        "calibration": None if calib is None else calib.name,
        "batch_size": batch_size,
        "seed": seed,
    }
    report = report_head("sensitivity", model, data, settings)
    report.update(result.to_dict())
    return report

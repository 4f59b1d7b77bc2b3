"""What ``robustlab corrupt`` does: load, evaluate corruptions (and transformations and
frequency-band noise for images), and assemble the report dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from robustlab.corruptions.base import corruption_names, parse_severities
from robustlab.corruptions.evaluate import evaluate_corruptions, to_unit
from robustlab.corruptions.figures import example_grid
from robustlab.corruptions.frequency import evaluate_frequency
from robustlab.corruptions.tabular import tabular_names
from robustlab.corruptions.transforms import evaluate_transformations
from robustlab.jobs.common import check_fits, load_beside, prepare, report_head
from robustlab.results import metric_dicts
from robustlab.shards import Backend

Progress = Callable[[str], None]


def _baseline(src, data):

    base = load_beside(src, data)
    check_fits(base.module, data, "baseline model")
    return base


def corrupt_job(
    model_src,
    data_src,
    corruptions: str | Sequence[str] = "all",
    severities: str | Sequence[int] = "1-5",
    *,
    baseline=None,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    max_shift: int = 1,
    transformations: bool = True,
    frequency: bool = True,
    device="cpu",
    backend: Backend = Backend(),
    progress: Progress | None = None,
) -> dict:
    """Natural robustness of a model on a dataset (``backend`` dask: each corruption a Dask
    task, the same numbers); keys ``clean_accuracy``, ``table``,
    ``per_corruption``, ``mean_corruption_accuracy``, ``mce`` / ``relative_mce`` (with a
    baseline, else None), ``transformations``, ``frequency_channel``, ``frequency``,
    ``examples``."""

    sevs = parse_severities(severities)
    model, data = prepare(model_src, data_src, n, device)
    tabular = data.x.dim() == 2
    names = tabular_names(corruptions) if tabular else corruption_names(corruptions)
    base = _baseline(baseline, data) if baseline is not None else None
    result = evaluate_corruptions(
        model.module,
        data,
        names,
        sevs,
        baseline=None if base is None else base.module,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        backend=backend,
    )
    report = report_head(
        "corrupt",
        model,
        data,
        {
            "corruptions": names,
            "severities": sevs,
            "baseline": None if base is None else base.name,
            "seed": seed,
            "max_shift": max_shift if transformations and not tabular else None,
        },
    )
    report.update(result.to_dict())
    report["metrics"] = metric_dicts(result.metrics())
    if base is not None:
        report["baseline"] = {"model": base.to_dict(), **result.baseline}
    report["transformations"] = None
    report["frequency_channel"] = None
    report["frequency"] = None
    report["examples"] = None
    if tabular:
        return report
    if transformations:
        if progress:
            progress(f"translations, rotations and scales on {len(data)} examples")
        report["transformations"] = evaluate_transformations(
            model.module, data, max_shift=max_shift, batch_size=batch_size
        ).to_dict()
    if frequency:
        if progress:
            progress(f"octave-band noise on {len(data)} examples")
        freq = evaluate_frequency(model.module, data, batch_size=batch_size, seed=seed).to_dict()
        report["frequency_channel"] = freq["channel"]
        report["frequency"] = freq
    report["examples"] = {
        "index": 0,
        "label": int(data.y[0]),
        "png": example_grid(to_unit(data)[0], names, sevs, seed),
    }
    return report

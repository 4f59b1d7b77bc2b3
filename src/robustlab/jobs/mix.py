"""The ``robustlab mix`` job: load both members, fit and measure the mixtures, export the chosen
one to ONNX (one graph: both members, the transform and the mixing), and assemble the report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

from robustlab._onnx import torch_to_onnx
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.jobs.common import check_eps, check_fits, load_beside, prepare, report_head
from robustlab.mix.frontier import STRENGTHS, mix
from robustlab.mix.transform import MixedClassifier
from robustlab.model import LoadedModel, load_model
from robustlab.results import metric_dicts
from robustlab.threat import parse_norm

Progress = Callable[[str], None]


def parse_strengths(text: str | Sequence[float]) -> list[float]:
    """Strengths from ``"1,0.98,0.9"`` or a list: each in (0, 1], at least one."""
    try:
        values = (
            [float(v) for v in text.split(",") if v.strip()]
            if isinstance(text, str)
            else [float(v) for v in text]
        )
    except ValueError:
        raise RobustlabError(f"strengths must be numbers in (0, 1]; found {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise RobustlabError(f"strengths must be numbers in (0, 1]; found {text!r}")
    return values


def check_pair(first: LoadedModel, second: LoadedModel, data: Dataset, name: str) -> None:
    """Two members of a mixture take the same inputs (``data``'s) and give as many outputs;
    ``name``: the second one, as errors name it."""
    if first.input_shape is not None and second.input_shape is not None:
        if tuple(first.input_shape) != tuple(second.input_shape):
            raise RobustlabError(
                f"the two models take different inputs: {list(first.input_shape)} and "
                f"{list(second.input_shape)}"
            )
    check_fits(second.module, data, name)
    k1, k2 = (int(m.module(data.x[:1]).shape[1]) for m in (first, second))
    if k1 != k2:
        raise RobustlabError(f"the two models have {k1} and {k2} outputs; expected the same")


def mix_job(
    accurate_src,
    robust_src,
    data_src,
    eps: float,
    norm: str = "inf",
    *,
    strengths: str | Sequence[float] = STRENGTHS,
    fit_share: float = 0.5,
    suite: str = "fast",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    out: Path | str = "mix.onnx",
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """Mixtures of the two models at each strength (fitted on ``fit_share`` of the data, measured
    on the rest); the chosen one exported to ``out``. Keys ``clean_accuracy`` and
    ``robust_accuracy`` (the chosen mixture), ``frontier`` (one row per member and strength),
    ``chosen``, ``target``, ``members``, ``onnx``, ``metrics``."""

    (eps,) = check_eps([eps])
    norm = parse_norm(norm)
    qs = parse_strengths(strengths)
    acc_m, data = prepare(accurate_src, data_src, n, device)
    rob_m = load_beside(robust_src, data)
    check_pair(acc_m, rob_m, data, "robust model")
    result = mix(acc_m.module, rob_m.module, data, eps, norm, strengths=qs, fit_share=fit_share,
                 suite=suite, seed=seed, batch_size=batch_size, progress=progress)  # fmt: skip
    chosen = result.fits[result.chosen - 2]
    mixed = MixedClassifier(acc_m.module, rob_m.module, chosen.alpha, chosen.transform)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(data.x.shape[1:])
    onnx.save(torch_to_onnx(mixed.eval().cpu(), shape), str(out))
    exported = load_model(out)  # the saved graph, checked against onnxruntime
    settings = {
        "eps": eps, "norm": norm, "strengths": qs, "fit_share": fit_share, "suite": suite,
        "seed": seed, "batch_size": batch_size,
        "accurate": acc_m.name, "robust": rob_m.name,
    }  # fmt: skip
    report = report_head("mix", exported, data, settings)
    row = result.rows[result.chosen]
    report.update(result.to_dict())
    report.update(
        norm=norm,
        clean_accuracy=row["clean_accuracy"],
        robust_accuracy=row["robust_accuracy"],
        members={"accurate": acc_m.to_dict(), "robust": rob_m.to_dict()},
        onnx=str(out),
        metrics=metric_dicts(result.metrics(), keep_missing=True),
    )
    return report

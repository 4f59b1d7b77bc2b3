"""What ``robustlab blindspots`` does: load, traverse level sets between pairs of inputs of
different classes, probe the shape bias on images, and assemble the report dict.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robustlab.attacks.base import predict
from robustlab.blindspots.levelset import level_set_traversal, pairs
from robustlab.blindspots.shapebias import shape_bias
from robustlab.jobs.common import prepare, report_head

Progress = Callable[[str], None]


def blindspots_job(
    model_src,
    data_src,
    *,
    n: int | None = None,
    n_pairs: int = 20,
    n_steps: int = 200,
    step: float = 0.1,
    tol: float = 0.02,
    shape_pairs: int = 500,
    patch: int = 2,
    alpha: float = 0.5,
    n_show: int = 4,
    seed: int = 0,
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """Level-set traversal on ``n_pairs`` pairs of the data (first ``n`` examples) and, for
    images, the shape bias on ``shape_pairs`` cue-conflict images; keys ``levelset`` (distances,
    fractions, the first ``n_show`` paths and targets), ``shape_bias`` (None for non-images),
    ``clean_accuracy``, ``metrics``."""

    say = progress or (lambda _msg: None)
    loaded, data = prepare(model_src, data_src, n, device)
    model = loaded.module
    s, t = pairs(data.y, n_pairs, seed)
    say(f"level-set traversal on {n_pairs} pairs")
    ls = level_set_traversal(
        model, data.x[s], data.x[t], n_steps=n_steps, step=step, tol=tol,
        lower=data.lower, upper=data.upper,
    )  # fmt: skip
    levelset = {
        **ls.to_dict(),
        "paths": ls.path[:n_show].tolist(),
        "targets": data.x[t[:n_show]].tolist(),
    }
    metrics = ls.metrics()
    sb = None
    if data.x.dim() == 4:
        say(f"shape bias on {shape_pairs} cue-conflict images")
        res = shape_bias(model, data.x, data.y, n_pairs=shape_pairs, patch=patch, alpha=alpha,
                         seed=seed, n_examples=n_show)  # fmt: skip
        sb = {**res.to_dict(), "examples": res.examples.tolist()}
        metrics += res.metrics()
    settings = {"n_pairs": n_pairs, "n_steps": n_steps, "step": step, "tol": tol,
                "shape_pairs": shape_pairs, "patch": patch, "alpha": alpha,
                "seed": seed}  # fmt: skip
    report = report_head("blindspots", loaded, data, settings)
    with torch.no_grad():
        report["clean_accuracy"] = float((predict(model, data.x) == data.y).float().mean())
    report["levelset"] = levelset
    report["shape_bias"] = sb
    report["metrics"] = [m.to_dict() for m in metrics]
    return report

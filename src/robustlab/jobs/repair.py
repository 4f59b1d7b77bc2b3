"""What ``robustlab repair`` does: load, build the properties (VNN-LIB files, or local robustness
around data points), repair, export the repaired ONNX, and assemble the report dict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import torch

from robustlab._onnx import torch_to_onnx
from robustlab.errors import RobustlabError
from robustlab.jobs.common import prepare, report_head, versions
from robustlab.model import load_model
from robustlab.repair.repair import local_robustness_specs, repair
from robustlab.results import Metric, metric_dicts
from robustlab.verify.vnnlib import read_vnnlib

Progress = Callable[[str], None]


def _anchor_box(specs, n: int, seed: int) -> torch.Tensor:
    """``n`` uniform samples in the hull of every region's box (flat, float64)."""
    lo = torch.stack([s.lower.min(0).values for s in specs]).min(0).values
    hi = torch.stack([s.upper.max(0).values for s in specs]).max(0).values
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, len(lo), generator=gen, dtype=torch.float64)


def _outside(specs, x: torch.Tensor) -> torch.Tensor:
    """Whether each flat input lies outside every region of every specification."""
    inside = torch.zeros(len(x), dtype=torch.bool)
    for s in specs:
        inside |= ((s.lower[None] <= x[:, None]) & (x[:, None] <= s.upper[None])).all(2).any(1)
    return ~inside


def decisions_kept(before, after, specs, domain, shape, n: int, seed: int) -> dict:
    """On ``n`` fresh uniform samples of the ``domain`` specifications' boxes outside every
    region of ``specs``: the share whose largest and whose smallest output (a classifier's
    decision; ACAS Xu's advisory) are unchanged."""
    x = _anchor_box(domain, n, seed + 1)
    x = x[_outside(specs, x)]
    if not len(x):  # the domain is the properties' own boxes
        return {"n": 0, "argmax": None, "argmin": None}
    dtype = next(before.parameters()).dtype
    with torch.no_grad():
        a = before(x.to(dtype).view(-1, *shape)).reshape(len(x), -1)
        b = after(x.to(dtype).view(-1, *shape)).reshape(len(x), -1)
    share = lambda u, v: float((u == v).double().mean())  # noqa: E731
    return {"n": len(x), "argmax": share(a.argmax(1), b.argmax(1)),
            "argmin": share(a.argmin(1), b.argmin(1))}  # fmt: skip


def repair_job(
    model_src,
    *,
    specs: Sequence[str | Path] | None = None,
    data_src=None,
    eps: float | None = None,
    n: int | None = 100,
    test_data=None,
    out: Path | str = "repaired.onnx",
    rounds: int = 10,
    epochs: int = 2,
    lr: float = 1e-4,
    penalty: float = 3.0,
    margin: float = 0.1,
    anchor_weight: float = 1.0,
    timeout: float = 10.0,
    n_anchor: int = 4096,
    domain: str | Path | None = None,
    region_samples: int = 0,
    boxes: int = 0,
    box_weight: float = 0.01,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Repair ``model_src`` for the VNN-LIB files ``specs``, or for Linf local robustness at
    ``eps`` around the first ``n`` examples of ``data_src`` (their labels); the anchor keeps the
    original model's outputs on ``data_src`` (or on ``n_anchor`` uniform samples in the hull of
    the specification boxes, where margins are in units of the outputs' standard deviation; a
    domain anchor needs ``data_src``). ``domain``: a VNN-LIB file whose input box the anchor
    samples instead (ACAS Xu: the whole input domain), so the decisions outside the properties
    are kept; ``region_samples`` and ``boxes`` / ``box_weight``: see
    :func:`robustlab.repair.repair`. Saves the repaired ONNX at ``out``; keys ``repair`` (the
    RepairResult), ``clean_accuracy`` (after), ``onnx``, ``metrics``, and without data
    ``decisions_kept`` (:func:`decisions_kept`)."""

    if bool(specs) == (eps is not None):
        raise RobustlabError("repair needs either specification files or eps (with data); found "
                             + ("both" if specs else "neither"))  # fmt: skip
    if eps is not None and data_src is None:
        raise RobustlabError("local robustness properties (eps) need data; found none")
    if domain is not None and data_src is not None:
        raise RobustlabError("domain samples the anchor without data; found both domain and data")
    say = progress or (lambda _msg: None)
    data = None
    if data_src is not None:
        loaded, data = prepare(model_src, data_src)
    else:
        loaded = load_model(model_src)
    module = loaded.module.eval()
    shape = tuple(loaded.input_shape or data.x.shape[1:])
    n_in = int(torch.tensor(shape).prod())
    with torch.no_grad():
        n_out = module(torch.zeros(1, *shape)).numel()
    if specs:
        spec_list = [read_vnnlib(p, n_in, n_out) for p in specs]
        names = [str(p) for p in specs]
    else:
        sub = data.subset(n)
        spec_list = local_robustness_specs(sub.x, sub.y, eps, n_out)
        names = [f"{data.name}[{i}] eps {eps:g}" for i in range(len(sub))]
    dtype = next(module.parameters()).dtype
    dom = [read_vnnlib(domain, n_in, n_out)] if domain is not None else spec_list
    ax = data.x if data is not None else _anchor_box(dom, n_anchor, seed).view(-1, *shape)
    ax = ax.to(dtype)
    with torch.no_grad():
        ay = module(ax).reshape(len(ax), -1)
    # without data (specifications alone) outputs can be on any scale (ACAS Xu: ~1e-3 apart):
    # margins and losses in units of the outputs' standard deviation
    scale = float(ay.double().std()) if data is None and float(ay.double().std()) > 0 else 1.0
    test = None
    if test_data is not None:
        _, td = prepare(model_src, test_data)
        test = (td.x, td.y)
    elif data is not None:
        test = (data.x, data.y)
    say(f"repairing {len(spec_list)} properties")
    repaired, result = repair(
        module, spec_list, shape, (ax, ay), test=test, rounds=rounds, epochs=epochs, lr=lr,
        penalty=penalty, margin=margin, anchor_weight=anchor_weight, scale=scale, timeout=timeout,
        region_samples=region_samples, boxes=boxes, box_weight=box_weight, seed=seed, progress=say,
    )  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(torch_to_onnx(repaired, shape), str(out))
    load_model(out)  # the saved file loads (and matches onnxruntime)
    settings = {"eps": eps, "specs": names if specs else None, "rounds": rounds,
                "epochs": epochs, "lr": lr, "penalty": penalty, "margin": margin,
                "anchor_weight": anchor_weight, "scale": scale, "timeout": timeout,
                "domain": None if domain is None else str(domain),
                "region_samples": region_samples, "boxes": boxes, "box_weight": box_weight,
                "seed": seed}  # fmt: skip
    if data is not None:
        report = report_head("repair", loaded, data, settings)
    else:
        report = {
            "kind": "repair",
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "model": loaded.to_dict(),
            "data": {"name": "specifications", "n": len(spec_list)},
            "settings": settings,
            "versions": versions(),
        }
    report["clean_accuracy"] = result.accuracy_after
    report["repair"] = {**result.to_dict(), "properties": names}
    report["onnx"] = str(out)
    report["metrics"] = [m.to_dict() for m in result.metrics()]
    if data is None:
        kept = decisions_kept(module, repaired, spec_list, dom, shape, n_anchor, seed)
        report["decisions_kept"] = kept
        report["metrics"] += metric_dicts(
            Metric(f"decisions kept ({k})", kept[k], True) for k in ("argmax", "argmin")
        )
    return report

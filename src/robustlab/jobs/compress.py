"""What ``robustlab prune`` and ``robustlab patch`` do: load, prune or patch, export and evaluate,
and assemble the report dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

from robustlab._onnx import torch_to_onnx
from robustlab.compress.masks import check_sparsity, check_structure
from robustlab.compress.prune import check_method, check_objective, prune
from robustlab.compress.result import PruneResult
from robustlab.compress.signature import check_same_architecture, evaluate_signature
from robustlab.errors import RobustlabError
from robustlab.inputs import resolve_device
from robustlab.jobs.common import check_eps, check_fits, load_beside, prepare, report_head
from robustlab.jobs.train import split_data
from robustlab.model import load_model
from robustlab.train.compare import evaluate_trained

Progress = Callable[[str], None]


def _names(text: str | Sequence[str], what: str) -> list[str]:
    names = (
        [t.strip() for t in text.split(",") if t.strip()] if isinstance(text, str) else list(text)
    )
    if not names:
        raise RobustlabError(f"expected at least one {what}; found {text!r}")
    return names


def onnx_path(out: Path, method: str, sparsity: float) -> Path:
    """``out-<method>-<percent>.onnx`` beside ``out``."""
    return out.with_name(f"{out.stem}-{method}-{100 * sparsity:g}{out.suffix or '.onnx'}")


def _evaluation(ev: dict) -> dict:
    return {k: ev[k] for k in ("clean_accuracy", "robust_accuracy", "certified_accuracy",
                               "certified_by", "seconds")}  # fmt: skip


def prune_job(
    model_src,
    data_src,
    sparsity: float | Sequence[float],
    method: str | Sequence[str] = "magnitude",
    *,
    structure: str = "unstructured",
    objective: str = "pgd-at",
    eps: float,
    epochs: int = 10,
    score_epochs: int = 10,
    test_data=None,
    n: int | None = None,
    out: Path | str = "pruned.onnx",
    batch_size: int = 32,
    lr: float = 1e-3,
    suite: str = "fast",
    seed: int = 0,
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """Prune with each method at each sparsity (from the same dense model), fine-tune, save
    ``out-<method>-<percent>.onnx``, evaluate each saved file and the dense model on the test
    data (clean, attack-suite robust, IBP / CROWN certified at Linf ``eps``); keys ``dense``,
    ``rows`` (the robustness-against-sparsity curve), ``metrics``."""
    say = progress or (lambda _msg: None)
    sparsities = check_sparsity([sparsity] if isinstance(sparsity, (int, float)) else sparsity)
    methods = [check_method(m) for m in _names(method, "pruning method")]
    check_structure(structure)
    if any(m != "pwoa" for m in methods):
        check_objective(objective)
    (eps,) = check_eps([eps])
    if epochs < 0 or score_epochs < 1 or batch_size < 1 or not lr > 0:
        raise RobustlabError(
            "expected epochs >= 0, score_epochs >= 1, batch_size >= 1 and lr > 0; found "
            f"{epochs}, {score_epochs}, {batch_size}, {lr}"
        )
    dev = resolve_device(device)
    dense = load_model(model_src)
    dense.module.to(dev)
    shape = dense.input_shape
    train_d, test_d = split_data(data_src, test_data, shape, seed)
    train_d, test_d = train_d.to(dev), test_d.subset(n).to(dev)
    check_fits(dense.module, test_d)
    out = Path(out)
    start = time.perf_counter()
    say(f"evaluating the dense model on {len(test_d)} examples")
    dense_ev = _evaluation(evaluate_trained(dense.module, test_d, eps, suite=suite, seed=seed))
    rows, flags = [], []
    for m in methods:
        for s in sparsities:
            say(f"{m} at sparsity {s:g}")
            pruned, info = prune(dense.module, train_d, s, method=m, structure=structure,
                                 objective=objective, eps=eps, epochs=epochs,
                                 score_epochs=score_epochs, batch_size=batch_size, lr=lr,
                                 seed=seed, eval_data=test_d, progress=say)  # fmt: skip
            path = onnx_path(out, m, s)
            path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(torch_to_onnx(pruned.cpu(), shape), str(path))
            loaded = load_model(path)  # the saved file, checked against onnxruntime
            loaded.module.to(dev)
            say(f"{m} at sparsity {s:g}: evaluating {path.name}")
            ev = evaluate_trained(loaded.module, test_d, eps, suite=suite, seed=seed)
            flags += ev["flags"]
            rows.append({**{k: v for k, v in info.items() if k != "log"}, **_evaluation(ev),
                         "onnx": str(path), "log": info["log"]})  # fmt: skip
    result = PruneResult(eps, structure, dense_ev, rows, time.perf_counter() - start)
    settings = {
        "methods": methods,
        "sparsity": sparsities,
        "structure": structure,
        "objective": objective,
        "eps": eps,
        "norm": "inf",
        "epochs": epochs,
        "score_epochs": score_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "suite": suite,
        "train_data": train_d.name,
        "train_n": len(train_d),
    }
    report = report_head("prune", dense, test_d, settings)
    report.update(result.to_dict())
    report.update(clean_accuracy=dense_ev["clean_accuracy"], onnx=[r["onnx"] for r in rows],
                  flags=flags)  # fmt: skip
    return report


def patch_job(
    standard_src,
    robust_src,
    data_src,
    scales: Sequence[float],
    *,
    eps: float,
    target_src=None,
    layers: int | None = None,
    n: int | None = None,
    suite: str = "fast",
    batch_size: int = 256,
    seed: int = 0,
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """A robust weight signature (robust - standard on the first ``layers`` layers) added to
    ``target`` (default: the standard model) with each scale, evaluated at Linf ``eps``; keys
    ``rows`` (scale, clean / robust / certified accuracy), ``standard``, ``robust``, ``target``,
    ``difference`` (per layer), ``metrics``."""
    (eps,) = check_eps([eps])
    values = [float(a) for a in scales]
    if not values or any(not abs(a) < float("inf") for a in values):
        raise RobustlabError(f"scale must be finite numbers, at least one; found {list(scales)}")
    standard, data = prepare(standard_src, data_src, n, device)
    robust = load_beside(robust_src, data)
    check_fits(robust.module, data, "robust model")
    check_same_architecture(standard.module, robust.module, ("standard", "robust"))
    target = None
    if target_src is not None:
        target = load_beside(target_src, data)
        check_fits(target.module, data, "target model")
    result = evaluate_signature(standard.module, robust.module, data, eps, values,
                                target=None if target is None else target.module, shallow=layers,
                                suite=suite, batch_size=batch_size, seed=seed,
                                progress=progress)  # fmt: skip
    settings = {
        "robust": robust.to_dict(),
        "target": None if target is None else target.to_dict(),
        "scales": values,
        "layers": layers,
        "eps": eps,
        "norm": "inf",
        "suite": suite,
        "seed": seed,
    }
    report = report_head("patch", standard, data, settings)
    report.update(result.to_dict())
    report["clean_accuracy"] = result.target["clean_accuracy"]
    return report

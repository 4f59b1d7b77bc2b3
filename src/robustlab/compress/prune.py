"""Pruning a (robust) model: choose masks by weight magnitude, by HYDRA's robust importance
scores or by PwoA's distillation, then fine-tune with the masks fixed under a training objective
(any registered training method: ``pgd-at``, ``trades``, ``crown-ibp``...; PwoA retrains under
its own objective, without adversarial examples)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from torch import nn

from robustlab.compress.hydra import hydra_masks
from robustlab.compress.masks import (
    check_sparsity,
    check_structure,
    frozen_masks,
    magnitude_masks,
    sparsity_report,
)
from robustlab.compress.pwoa import pwoa_prune
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.train.loop import train
from robustlab.train.methods import METHODS as OBJECTIVES

Progress = Callable[[str], None]
METHODS = ("magnitude", "hydra", "pwoa")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise RobustlabError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    return method


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise RobustlabError(
            f"unknown objective {objective!r}; known: {', '.join(sorted(OBJECTIVES))}"
        )
    return objective


def prune(
    model: nn.Module,
    data: Dataset,
    sparsity: float,
    *,
    method: str = "magnitude",
    structure: str = "unstructured",
    objective: str = "pgd-at",
    eps: float = 0.0,
    epochs: int = 10,
    score_epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    eval_data: Dataset | None = None,
    progress: Progress | None = None,
) -> tuple[nn.Module, dict]:
    """A pruned, fine-tuned copy of ``model`` at ``sparsity`` (the same share in every layer),
    and what it cost: ``score_epochs`` of HYDRA's score optimisation or PwoA's ADMM, then
    ``epochs`` of fine-tuning (the same budget for every method)."""
    check_method(method)
    check_structure(structure)
    (sparsity,) = check_sparsity([sparsity])
    if method != "pwoa":
        check_objective(objective)
    if epochs < 0 or score_epochs < 1:
        raise RobustlabError(
            f"expected epochs >= 0 and score_epochs >= 1; found {epochs}, {score_epochs}"
        )
    say = progress or (lambda _m: None)
    pruned = copy.deepcopy(model)
    for p in pruned.parameters():
        p.requires_grad_(True)
    start = time.perf_counter()
    log: list[dict] = []
    if method == "pwoa":
        masks, cost = pwoa_prune(pruned, data, sparsity, structure=structure,
                                 admm_epochs=score_epochs, finetune_epochs=epochs,
                                 batch_size=max(batch_size, 32), seed=seed,
                                 progress=say)  # fmt: skip
        prune_s, tune_s = cost["admm_seconds"], cost["finetune_seconds"]
        objective = "pwoa"
    else:
        if method == "hydra":
            masks, cost = hydra_masks(pruned, data, sparsity, structure=structure,
                                      objective=objective, eps=eps, epochs=score_epochs,
                                      batch_size=batch_size, seed=seed, progress=say)  # fmt: skip
        else:
            masks, cost = magnitude_masks(pruned, sparsity, structure), {"seconds": 0.0}
        prune_s = time.perf_counter() - start
        t0 = time.perf_counter()
        if epochs:

            def on_epoch(entry: dict) -> None:
                say(f"{method} {sparsity:g} fine-tuning epoch {entry['epoch']}/{epochs}: "
                    f"loss {entry['loss']:.3f}")  # fmt: skip

            with frozen_masks(pruned, masks):
                result = train(pruned, data, objective, eps, epochs=epochs, batch_size=batch_size,
                               lr=lr, seed=seed, init="keep", eval_data=eval_data,
                               on_epoch=on_epoch)  # fmt: skip
            log = result.log
        else:
            with frozen_masks(pruned, masks):
                pass
        tune_s = time.perf_counter() - t0
    report = sparsity_report(pruned, structure)
    info = {
        "method": method,
        "structure": structure,
        "objective": objective,
        "target_sparsity": sparsity,
        "sparsity": report["sparsity"],
        "per_layer": report["layers"],
        "prune_epochs": 0 if method == "magnitude" else score_epochs,
        "finetune_epochs": epochs,
        "prune_seconds": prune_s,
        "finetune_seconds": tune_s,
        "train_seconds": time.perf_counter() - start,
        "log": log,
    }
    return pruned.eval(), info

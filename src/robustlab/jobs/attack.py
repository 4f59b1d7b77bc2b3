"""``robustlab attack``: robust accuracy under an attack suite, and the adversarial examples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robustlab.attacks import predict
from robustlab.attacks.sharded import evaluate_sharded
from robustlab.attacks.transfer import load_surrogate
from robustlab.data import Dataset
from robustlab.jobs.common import Progress, check_eps, check_eps_on, prepare, report_head
from robustlab.paths import cannot_write, output_file
from robustlab.results import metric_dicts
from robustlab.shards import Backend
from robustlab.threat import parse_norm


def attack_job(
    model_src,
    data_src,
    eps: Sequence[float],
    norm: str = "inf",
    *,
    suite: str = "fast",
    attacks: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    eot: int = 1,
    surrogate=None,
    save_examples=None,
    device="cpu",
    backend: Backend = Backend(),
    progress: Progress | None = None,
) -> dict:
    """Robust accuracy under an attack suite (or named attacks) at each eps; keys
    ``clean_accuracy``, ``robust_accuracy`` (first eps), ``curve``, ``per_attack``, ``flags``,
    ``certified_skipped``. ``surrogate``: the model the transfer attack crafts its examples on;
    ``eot``: forward passes per gradient; ``save_examples``: an ``.npz`` file for the adversarial
    examples (``save_examples``); ``device``: cpu, cuda or auto (``inputs.resolve_device``);
    ``backend``: the data in shards, in this process or on Dask (``shards.Backend``)."""
    eps, norm = check_eps(eps), parse_norm(norm)
    model, data = prepare(model_src, data_src, n, device)
    check_eps_on(eps, norm, data)
    sur, attacks = load_surrogate(surrogate, data, attacks)
    if progress:
        progress(f"{suite if attacks is None else ','.join(attacks)} on {len(data)} examples")
    result = evaluate_sharded(
        model.module,
        data,
        eps,
        norm,
        suite=suite,
        attacks=attacks,
        batch_size=batch_size,
        seed=seed,
        eot=eot,
        surrogate=sur.module if sur else None,
        backend=backend,
        progress=progress,
    )
    settings = {
        "suite": result.suite,
        "attacks": result.attacks,
        "norm": norm,
        "eps": eps,
        "seed": seed,
        "eot": eot,
    }
    if backend.name != "local" or backend.shard_size:
        settings["shards"] = {"backend": backend.name, "shard_size": backend.shard_size}
    if sur:
        settings["surrogate"] = sur.to_dict()
    report = report_head("attack", model, data, settings)
    report.update(result.to_dict())
    report["metrics"] = metric_dicts(result.metrics(), keep_missing=True)
    if save_examples is not None:
        report["examples_file"] = str(write_examples(save_examples, model.module, data, result))
    return report


def write_examples(path, module: torch.nn.Module, data: Dataset, result) -> Path:
    """The adversarial examples of a ``SuiteResult`` as an ``.npz`` (no pickles): ``x``, ``y``,
    ``eps`` (E,), the worst case per eps ``x_adv`` (E, N, ...), ``broken`` (E, N), ``attack``
    (E, N: the attack that broke the point, "" where none did), ``prediction`` (E, N) on
    ``x_adv``; folders created."""
    x_adv = torch.stack(result.x_adv)
    arrays = {
        "x": data.x.cpu().numpy(),
        "y": data.y.cpu().numpy(),
        "eps": np.asarray(result.eps, dtype=np.float64),
        "x_adv": x_adv.cpu().numpy(),
        "broken": np.asarray([[a != "" for a in row] for row in result.broken_by], dtype=bool),
        "attack": np.asarray(result.broken_by, dtype=str).reshape(len(result.eps), len(data)),
        "prediction": np.stack([predict(module, xa).cpu().numpy() for xa in result.x_adv]),
    }
    path = Path(path)
    try:
        with open(output_file(path, "save_examples"), "wb") as f:
            np.savez_compressed(f, **arrays)
    except OSError as e:
        raise cannot_write(path, e, "save_examples") from None
    return path

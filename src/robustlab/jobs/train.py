"""The ``robustlab train`` job: build or load an architecture, train it with one or more methods,
export each model to ONNX, evaluate it, and assemble the report (with the comparison table)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from robustlab import zoo
from robustlab._onnx import torch_to_onnx
from robustlab.data import Dataset, load_data
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.inputs import resolve_device
from robustlab.jobs.common import check_eps, report_head
from robustlab.model import load_model
from robustlab.results import Metric, curve_metrics, metric_dicts
from robustlab.train.compare import Comparison, comparison_row, evaluate_trained
from robustlab.train.fullcert import TrainingCertificate
from robustlab.train.fullcert import certify_training as certify_training_fn
from robustlab.train.init import reset_parameters
from robustlab.train.loop import OPTIMIZERS, SELECTS, TrainResult, hold_out, train
from robustlab.train.methods import METHODS, get_method

Progress = Callable[[str], None]
HOLD_OUT = 0.2  # select="best": the share of the training data held out to choose the epoch


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Training methods from ``"standard,pgd-at"`` or a list; each must be registered."""
    names = (
        [m.strip() for m in text.split(",") if m.strip()] if isinstance(text, str) else list(text)
    )
    if not names:
        raise RobustlabError("expected at least one training method")
    names = [canonical(m, METHODS) for m in names]  # pgd_at: pgd-at
    for m in names:
        if m not in METHODS:
            raise unknown("training method", m, METHODS)
    return names


def architecture(arch: str, *, seed: int = 0, finetune: bool = False):
    """``(build, input_shape, name)``: ``build()`` gives a fresh model of a zoo architecture
    (``mlp``, ``cnn``) or of an ONNX file's graph (re-initialised unless ``finetune``)."""
    if arch in zoo.ARCHITECTURES:

        def build() -> nn.Module:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                return zoo.build(arch)

        return build, zoo.INPUT_SHAPE, arch
    path = Path(arch)
    if path.suffix.lower() != ".onnx":
        raise RobustlabError(
            f"arch expects {', '.join(zoo.ARCHITECTURES)} or an .onnx file; found {arch!r}",
            param="arch",
        )
    loaded = load_model(path)
    template = loaded.module

    def build_file() -> nn.Module:
        model = copy.deepcopy(template)
        return model if finetune else reset_parameters(model, seed=seed)

    return build_file, tuple(loaded.input_shape), path.name


def split_data(data_src, test_src, input_shape, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Training and test data: digits' own split for ``digits``; ``test_src`` when given; else
    a fixed random 80/20 split of the data."""
    if str(data_src) in ("digits", "digits-train"):
        train_d = load_data("digits-train").matched_to(input_shape)
        test_d = load_data(test_src or "digits", input_shape).matched_to(input_shape)
        return train_d, test_d
    data = load_data(data_src, input_shape).matched_to(input_shape)
    if test_src is not None:
        return data, load_data(test_src, input_shape).matched_to(input_shape)
    if len(data) < 5:
        raise RobustlabError(f"data '{data.name}' has {len(data)} examples; expected at least 5")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    cut = len(data) - max(1, len(data) // 5)
    tr, te = order[:cut], order[cut:]

    def part(idx, suffix):
        return Dataset(f"{data.name}{suffix}", data.x[idx], data.y[idx], data.lower, data.upper)

    return part(tr, ""), part(te, " (held-out 20%)")


def method_kwargs(
    name: str,
    *,
    sigma: float | None = None,
    l2_eps: float | None = None,
    hr_alpha: float | None = None,
    hr_r: float | None = None,
    iat_adversary: str | None = None,
    mix: str | None = None,
    mix_alpha: float | None = None,
) -> dict:
    """The hyperparameters the job's options set for a method (the others keep defaults)."""
    mixing = {"mix": mix, "alpha": mix_alpha}
    given = {
        "gaussian": {"sigma": sigma},
        "lipschitz": {"eps": l2_eps},
        "hr": {"alpha": hr_alpha, "r": hr_r},
        "interpolated-at": {"adversary": iat_adversary, **mixing},
        "mixup": mixing,
    }.get(name, {})
    return {k: v for k, v in given.items() if v is not None}


def _fullcert_result(cert: TrainingCertificate, eps: float) -> TrainResult:
    """The FullCert run as a training result (its log, its cost) for the comparison row."""
    return TrainResult(
        method="standard", eps=eps, epochs=cert.epochs, schedule={}, log=cert.log, flags=[],
        seconds=cert.seconds, n_forward=0, n_backward=0, n_bounded=cert.n_train * cert.epochs,
        hyperparameters={"optimizer": "sgd", "lr": cert.lr, "batch_size": cert.batch_size,
                         "seed": cert.seed, "delta": cert.delta},
    )  # fmt: skip


def onnx_path(out: Path, method: str, several: bool) -> Path:
    return out.with_name(f"{out.stem}-{method}{out.suffix or '.onnx'}") if several else out


def train_job(
    arch: str,
    data_src,
    method: str | Sequence[str],
    eps: float,
    *,
    epochs: int = 20,
    out: Path | str = "model.onnx",
    test_data=None,
    n: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    sigma: float | None = None,
    finetune: bool = False,
    suite: str = "fast",
    attacks: Sequence[str] | None = None,
    l2_eps: float | None = None,
    hr_alpha: float | None = None,
    hr_r: float | None = None,
    certify_training: bool = False,
    delta: float = 1e-3,
    optimizer: str = "adam",
    iat_adversary: str | None = None,
    mix: str | None = None,
    mix_alpha: float | None = None,
    select: str = "last",
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """Train with each method, save ``out`` (or ``out-<method>.onnx`` for several), evaluate the
    saved files (also at L2 ``l2_eps`` when given: the lipschitz method's training radius);
    keys ``clean_accuracy``, ``robust_accuracy``, ``certified_accuracy`` (first method),
    ``curve``, ``log`` (per epoch), ``comparison``, ``onnx``, ``per_method``.

    ``certify_training``: train ``standard`` by FullCert's certified procedure (plain SGD at
    ``lr``, float64) with interval bounds for training data moved by at most ``delta`` per
    feature; key ``training_certificate`` (certified share of the test predictions).
    ``optimizer``: adam (cosine decay) or sgd (momentum, step decay; ``train.make_optimizer``);
    ``iat_adversary``: interpolated-at's attack, on the clean batch (Algorithm 1) or on the
    interpolated inputs; ``mix`` / ``mix_alpha``: mixup's and interpolated-at's combination (input
    mixup or Manifold Mixup at a hidden layer) and its Beta(alpha, alpha). ``select``: ``last``
    (the last epoch's weights) or ``best`` (the epoch with the best PGD-10 accuracy on
    ``HOLD_OUT`` of the training data, held out of training; ``train.train``). ``device``: where
    the models train and are evaluated (cpu, cuda or auto)."""
    say = progress or (lambda _msg: None)
    names = parse_methods(method)
    (eps,) = check_eps([eps])
    dev = resolve_device(device)
    if sigma is not None and not sigma > 0:
        raise RobustlabError(f"sigma must be positive; found {sigma}")
    if l2_eps is not None:
        (l2_eps,) = check_eps([l2_eps])
    if optimizer not in OPTIMIZERS:
        raise unknown("optimizer", optimizer, OPTIMIZERS)
    if select not in SELECTS:
        raise unknown("select", select, SELECTS)
    if certify_training and select != "last":
        raise RobustlabError(
            f"certify_training bounds every epoch of plain SGD: it expects select 'last'; found "
            f"{select!r}"
        )
    if certify_training and names != ["standard"]:
        raise RobustlabError(
            f"certify_training bounds plain SGD: it expects method 'standard' alone; found "
            f"{', '.join(names)}"
        )
    kwargs_of = {
        n: method_kwargs(n, sigma=sigma, l2_eps=l2_eps, hr_alpha=hr_alpha, hr_r=hr_r,
                         iat_adversary=iat_adversary, mix=mix, mix_alpha=mix_alpha)
        for n in names
    }  # fmt: skip
    methods = {n: get_method(n, **kwargs_of[n]) for n in names}  # bad values fail before training
    build, input_shape, arch_name = architecture(arch, seed=seed, finetune=finetune)
    train_d, test_d = split_data(data_src, test_data, input_shape, seed)
    val_d = None
    if select == "best":
        train_d, val_d = hold_out(train_d, HOLD_OUT, seed)
        val_d = val_d.to(dev)
    train_d, test_d = train_d.to(dev), test_d.subset(n).to(dev)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log.jsonl")
    log_path.write_text("")
    log, rows, per_method, onnx_files, flags, first_model = [], [], [], [], [], None
    results: list[TrainResult] = []
    certificate = None
    start = time.perf_counter()
    for name in names:
        model = build().to(dev)

        def on_epoch(entry: dict, name=name) -> None:
            with log_path.open("a") as f:  # written as produced: an interrupted run keeps it
                f.write(json.dumps(entry) + "\n")
            say(f"{name} epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.3f}, "
                f"clean {entry['clean_accuracy']:.3f}")  # fmt: skip

        if certify_training:
            certificate = certify_training_fn(model, train_d, test_d, delta, epochs=epochs,
                                              lr=lr, batch_size=batch_size, seed=seed,
                                              on_epoch=on_epoch)  # fmt: skip
            result = _fullcert_result(certificate, eps)
        else:
            result = train(model, train_d, methods[name], eps, epochs=epochs,
                           batch_size=batch_size, lr=lr, seed=seed, eval_data=test_d,
                           init="keep" if finetune else "auto", on_epoch=on_epoch,
                           optimizer=optimizer, select=select, val_data=val_d)  # fmt: skip
        path = onnx_path(out, name, len(names) > 1)
        onnx.save(torch_to_onnx(model.eval().cpu(), input_shape), str(path))
        loaded = load_model(path)  # the saved file, checked against onnxruntime
        loaded.module.to(dev)
        first_model = first_model or loaded
        say(f"{name}: evaluating {path.name} on {len(test_d)} examples")
        ev = evaluate_trained(loaded.module, test_d, eps, suite=suite, attacks=attacks, seed=seed,
                              l2_eps=l2_eps)  # fmt: skip
        row = comparison_row(result, ev)
        rows.append({**row, "onnx": str(path)})
        log += result.log
        results.append(result)
        flags += result.flags + ev["flags"]
        onnx_files.append(str(path))
        per_method.append({
            "method": name,
            "onnx": str(path),
            "onnx_max_abs_error": loaded.onnx_max_abs_error,
            "evaluation": ev,
            "training": {k: v for k, v in result.to_dict().items() if k != "log"},
        })  # fmt: skip
    settings = {
        "arch": arch_name,
        "methods": names,
        "eps": eps,
        "norm": "inf",
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "seed": seed,
        "sigma": sigma,
        "finetune": finetune,
        "train_data": train_d.name,
        "train_n": len(train_d),
        "select": select,
        "val_n": len(val_d) if val_d is not None else None,
        "suite": suite if attacks is None else None,
        "attacks": list(attacks) if attacks else None,
        "l2_eps": l2_eps,
        "hyperparameters": {n: kwargs_of[n] for n in names if kwargs_of[n]},
        "certify_training": certify_training,
        "delta": delta if certify_training else None,
    }
    report = report_head("train", first_model, test_d, settings)
    head = rows[0]
    comparison = Comparison(eps, rows)
    report.update(
        norm="inf",
        method=names[0] if len(names) == 1 else names,
        clean_accuracy=head["clean_accuracy"],
        robust_accuracy=head["robust_accuracy"],
        certified_accuracy=head["certified_accuracy"],
        curve=[
            {
                "eps": eps,
                "robust_accuracy": head["robust_accuracy"],
                "certified_accuracy": head["certified_accuracy"],
            }
        ],  # fmt: skip
        comparison=comparison.to_dict()["rows"],
        log=log,
        log_file=str(log_path),
        onnx=onnx_files,
        per_method=per_method,
        flags=flags,
        seconds=time.perf_counter() - start,
    )
    metrics = [Metric("clean_accuracy", head["clean_accuracy"], True),
               *curve_metrics(report["curve"]), *comparison.metrics()]  # fmt: skip
    for result in results:
        metrics += result.metrics()
    report["metrics"] = metric_dicts(metrics, keep_missing=True)
    if certificate is not None:
        report["training_certificate"] = certificate.to_dict()
    return report

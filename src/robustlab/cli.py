"""The ``robustlab`` command line (typer). No logic here: parse, call ``robustlab.jobs``, write,
record the run, print."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sqlite3
import sys
import traceback
from pathlib import Path

import typer
from rich.console import Console

# imports stay light here (``--help`` must not load torch or matplotlib): each command imports what
# it needs; robustlab.store and robustlab.paths use only the standard library
from robustlab import console, store
from robustlab.errors import RobustlabError
from robustlab.paths import cannot_write, output_file, output_folder

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Attack, certify, explain and harden neural networks.",
)
runs_app = typer.Typer(no_args_is_help=True, help="The run history (SQLite).")
app.add_typer(runs_app, name="runs")
out = Console()
err = Console(stderr=True)

DB = typer.Option(
    None, "--db", help="Run-history file (default $ROBUSTLAB_DB or ~/.robustlab/runs.sqlite)."
)


MEAN = typer.Option(
    None, "--mean", help="Per-channel mean the model expects, e.g. 0.4914,0.4822,0.4465: "
    "(x - mean) / std is prepended, inputs and eps stay in pixel space."
)  # fmt: skip
STD = typer.Option(None, "--std", help="Per-channel std the model expects (see --mean).")
DEVICE = typer.Option("cpu", "--device", help="cpu, cuda, or auto (cuda when available, else cpu).")
BACKEND = typer.Option("local", "--backend", help="local (this process) or dask (shards as tasks).")
WORKERS = typer.Option(2, "--workers", min=1, help="Dask workers of the local cluster.")
SCHEDULER = typer.Option(None, "--scheduler", help="Dask scheduler address (else a local cluster).")
SHARD_SIZE = typer.Option(
    None, "--shard-size", min=1, help="Points per shard (default: 64 on dask, all on local)."
)


def _backend(name: str, workers: int, scheduler: str | None, shard_size: int | None):
    """The --backend, --workers, --scheduler and --shard-size options as one ``shards.Backend``."""
    from robustlab.shards import Backend, default_shard_size

    return Backend(name, workers, scheduler, shard_size or default_shard_size(name))


def _model(model: str, mean: str | None, std: str | None):
    """The --model argument with its --mean / --std preprocessing."""
    from robustlab.model import ModelSource, parse_floats

    if mean is None and std is None:
        return model
    return ModelSource(model, parse_floats(mean, "--mean"), parse_floats(std, "--std"))


def _eps_list(text: str) -> list[float]:
    """``--eps 0.01,2/255,8/255``: numbers or fractions, comma-separated."""
    from robustlab.threat import parse_eps_list

    return parse_eps_list(text)


def _eps(text: str) -> float:
    """One ``--eps``: a number or a fraction such as 8/255 (a typer parser: click's error)."""
    from robustlab.threat import parse_eps

    try:
        return parse_eps(text)
    except RobustlabError as e:
        raise typer.BadParameter(_flagged(e)) from None


def _deprecated(old: str, new: str, meaning: str) -> None:
    """One stderr line for an old option name that still works."""
    err.print(
        f"note: {old} is deprecated; use {new} ({meaning})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _version(value: bool) -> None:
    if value:
        from robustlab import __version__

        out.print(f"robustlab {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Attack, certify, explain and harden neural networks."""


@contextlib.contextmanager
def _status(quiet: bool = False):
    """A spinner whose message follows the job's progress callback."""
    if quiet or not err.is_terminal:
        yield lambda msg: None
        return
    with err.status("starting") as status:
        yield lambda msg: status.update(msg)


def _command() -> str:
    """The command line as the run history records it."""
    return shlex.join(["robustlab", *sys.argv[1:]])


def _record(report: dict, report_path: Path, db) -> int:
    from robustlab.jobs.metrics import metrics_of

    return store.record(
        _command(),
        model=report["model"]["name"],
        model_hash=report["model"]["digest"],
        data=report["data"]["name"],
        settings=report.get("settings", {}),
        metrics=metrics_of(report),
        report=str(report_path.resolve()),
        db=db,
    )


def _outputs(path: Path, db: Path | None, folder: bool = False) -> None:
    """Before any work: ``--out`` (a file, or a folder) and ``--db`` can be written (missing
    folders are created when the results are written)."""
    if folder:
        output_folder(path, create=False)
    else:
        output_file(path, create=False)
    if db is not None:
        output_file(db, "--db", create=False)


def _save(report: dict, path: Path, db) -> int:
    """Write the report (JSON and its HTML page) and record the run; returns the run id."""
    from robustlab.report import write_report

    try:
        write_report(report, output_file(path), path.with_suffix(".html"))
    except OSError as e:
        raise cannot_write(path, e) from None
    return _record(report, path, db)


def _show(items: list) -> None:
    """Print a presenter's items (``robustlab.console``): tables and lines on stdout, notes on
    stderr."""
    for item in items:
        if isinstance(item, console.Note):
            err.print(item.text, markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(item)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("robustlab-demo"), "--out", help="Output folder."),
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Audit the zoo MLP (trained on first use) on digits with the quick profile."""
    from robustlab.jobs.audit import demo_job

    _outputs(out_dir, db, folder=True)
    _audit_run(lambda say, on_stage: demo_job(out=out_dir, device=device, progress=say,
                                            on_stage=on_stage),
               out_dir, db)  # fmt: skip


def _audit_run(job, out_dir: Path, db) -> None:
    from robustlab.audit.console import print_summary, stage_line
    from robustlab.report import write_report_dir

    with _status() as say:
        report = job(say, lambda rec: err.print(stage_line(rec), markup=False, highlight=False))
    try:
        json_path, html_path = write_report_dir(report, output_folder(out_dir))
    except OSError as e:
        raise cannot_write(out_dir, e) from None
    run_id = _record(report, json_path, db)
    print_summary(out, err, report)
    out.print(f"report: {json_path}\n        {html_path}\nrun id: {run_id}")


@app.command()
def audit(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: str | None = typer.Option(None, "--eps", help="Comma-separated (default: 0 to 0.2 Linf)."),
    norm: str = typer.Option("inf", "--norm", help="inf or 2."),
    profile: str = typer.Option("quick", "--profile", help="quick, standard or full."),
    baseline: str | None = typer.Option(None, "--baseline", help="Baseline model (mCE)."),
    budget: float | None = typer.Option(None, "--budget", help="Seconds (default: the profile's)."),
    smoothing: float | None = typer.Option(
        None, "--smoothing", help="Randomized smoothing with this noise sigma."
    ),
    conformal: float | None = typer.Option(
        None, "--conformal", help="Conformal sets (split, RSCP+, VRCP) at this alpha."
    ),
    detect: bool = typer.Option(False, "--detect", help="BEYOND detection, adaptive attack."),
    mix_accurate: str | None = typer.Option(
        None, "--mix-accurate", help="Mix this accurate model with the audited (robust) one."
    ),
    abstain: float | None = typer.Option(
        None, "--abstain", help="Certify-or-abstain at this radius, with the availability attack."
    ),
    weight_sensitivity: bool = typer.Option(
        False, "--weight-sensitivity", help="Hessian, Fisher, weight noise, precision per layer."
    ),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    out_dir: Path = typer.Option(Path("robustlab-audit"), "--out", help="Output folder."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    backend: str = BACKEND,
    workers: int = WORKERS,
    scheduler: str | None = SCHEDULER,
    shard_size: int | None = SHARD_SIZE,
    db: Path | None = DB,
) -> None:
    """Everything at once within a time budget: clean, attacks, bounds, corruptions, smoothing,
    sensitivity; DIR/report.json and DIR/report.html."""
    from robustlab.jobs.audit import audit_job

    _outputs(out_dir, db, folder=True)
    eps_values = None if eps is None else _eps_list(eps)
    accurate = None if mix_accurate is None else _model(mix_accurate, mean, std)
    on = _backend(backend, workers, scheduler, shard_size)  # a bad value: refused before loading

    def job(say, on_stage):
        return audit_job(_model(model, mean, std), data, eps_values, norm, profile=profile,
                         baseline=baseline, budget=budget, sigma=smoothing, n=n, seed=seed,
                         conformal=conformal, detect=detect, abstain=abstain,
                         mix_accurate=accurate,
                         weight_sensitivity=weight_sensitivity,
                         batch_size=batch_size, device=device,
                         backend=on, out=out_dir, progress=say, on_stage=on_stage)  # fmt: skip

    _audit_run(job, out_dir, db)


@app.command()
def attack(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:mlp."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: str = typer.Option(
        ..., "--eps", help="One eps or a comma-separated list (numbers or fractions: 8/255)."
    ),
    norm: str = typer.Option("inf", "--norm", help="inf or 2."),
    suite: str = typer.Option(
        "fast", "--suite", help="fast, rapid (MALT targeting) or standard (AutoAttack's)."
    ),
    attacks: str | None = typer.Option(
        None, "--attacks", help="Named attacks instead of a suite, e.g. pgd,apgd-ce."
    ),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    eot: int = typer.Option(
        1, "--eot", min=1, help="Forward passes per gradient (randomized models)."
    ),
    surrogate: str | None = typer.Option(
        None, "--surrogate", help="Model the transfer attack crafts its examples on."
    ),
    out_file: Path = typer.Option(Path("attack.json"), "--out", help="Result JSON."),
    save_examples: Path | None = typer.Option(
        None, "--save-examples", help="Write the adversarial examples to this .npz file."
    ),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    backend: str = BACKEND,
    workers: int = WORKERS,
    scheduler: str | None = SCHEDULER,
    shard_size: int | None = SHARD_SIZE,
    db: Path | None = DB,
) -> None:
    """Robust accuracy under an attack suite at one or more eps, with reliability flags."""
    from robustlab.jobs.attack import attack_job

    _outputs(out_file, db)
    if save_examples is not None:
        output_file(save_examples, "--save-examples", create=False)
    names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    with _status() as say:
        report = attack_job(
            _model(model, mean, std),
            data,
            _eps_list(eps),
            norm,
            suite=suite,
            attacks=names,
            n=n,
            batch_size=batch_size,
            seed=seed,
            eot=eot,
            surrogate=surrogate,
            save_examples=save_examples,
            device=device,
            backend=_backend(backend, workers, scheduler, shard_size),
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.attack(report))
    if save_examples is not None:
        out.print(f"examples: {save_examples}")
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def corrupt(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    corruptions: str = typer.Option(
        "all", "--corruptions", help="all, common, extra, a family, or names (comma-separated)."
    ),
    severities: str = typer.Option("1-5", "--severities", help="e.g. 1-5 or 1,3,5."),
    baseline: str | None = typer.Option(None, "--baseline", help="Baseline model for CE / mCE."),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    max_shift: int = typer.Option(1, "--max-shift", min=0, help="Largest translation (pixels)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("corrupt.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    backend: str = BACKEND,
    workers: int = WORKERS,
    scheduler: str | None = SCHEDULER,
    db: Path | None = DB,
) -> None:
    """Natural robustness: common corruptions (mCE), small transformations, frequency-band noise."""
    from robustlab.jobs.corrupt import corrupt_job

    _outputs(out_file, db)
    with _status() as say:
        report = corrupt_job(
            _model(model, mean, std),
            data,
            corruptions,
            severities,
            baseline=baseline,
            n=n,
            batch_size=batch_size,
            seed=seed,
            max_shift=max_shift,
            device=device,
            backend=_backend(backend, workers, scheduler, None),
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.corrupt(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def certify(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:mlp."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: str = typer.Option(
        ..., "--eps", help="One eps or a comma-separated list (numbers or fractions: 8/255)."
    ),
    norm: str = typer.Option("inf", "--norm", help="inf or 2."),
    method: str = typer.Option(
        "crown",
        "--method",
        help="ibp, crown-ibp, crown, alpha-crown, lipschitz (margin / Lipschitz radius), or a "
        "comma-separated list.",
    ),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    precision: str = typer.Option(
        "float64", "--precision", help="float64, or float32 (rigorous, faster on CNNs)."
    ),
    explain_proofs: int = typer.Option(
        0,
        "--explain-proofs",
        min=0,
        help="Proof features (ProFIt) of the first K certified inputs at the first eps.",
    ),  # fmt: skip
    out_file: Path = typer.Option(Path("certify.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    backend: str = BACKEND,
    workers: int = WORKERS,
    scheduler: str | None = SCHEDULER,
    shard_size: int | None = SHARD_SIZE,
    db: Path | None = DB,
) -> None:
    """Certified accuracy from sound bounds at one or more eps."""
    from robustlab.jobs.certify import certify_job

    _outputs(out_file, db)
    with _status() as say:
        report = certify_job(
            _model(model, mean, std),
            data,
            _eps_list(eps),
            norm,
            method=method,
            n=n,
            batch_size=batch_size,
            precision=precision,
            device=device,
            backend=_backend(backend, workers, scheduler, shard_size),
            progress=say,
        )
        if explain_proofs:
            from robustlab.jobs.explain import proofs_job

            say("proof features")
            report["proof_features"] = proofs_job(
                _model(model, mean, std), data, report["curve"][0]["eps"], n=n,
                limit=explain_proofs, device=device,
            )  # fmt: skip
    run_id = _save(report, out_file, db)
    _show(console.certify(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def explain(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    method: str = typer.Option(
        ...,
        "--method",
        help="saliency, input-x-gradient, integrated-gradients, smoothgrad, occlusion, "
        "grad-cam or sobol.",
    ),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    steps: int | None = typer.Option(
        None, "--steps", help="Integrated Gradients' path steps (its only meaning)."
    ),
    samples: int | None = typer.Option(
        None, "--samples", help="SmoothGrad's noise samples or Sobol's designs."
    ),
    target: str = typer.Option("predicted", "--target", help="predicted, label or a class."),
    batch_size: int = typer.Option(512, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("explain.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    backend: str = BACKEND,
    workers: int = WORKERS,
    scheduler: str | None = SCHEDULER,
    shard_size: int | None = SHARD_SIZE,
    db: Path | None = DB,
) -> None:
    """Attributions per input (JSON) and heat-maps (HTML)."""
    from robustlab.jobs.explain import SAMPLES_FIELD, explain_job

    _outputs(out_file, db)
    if steps is not None and samples is None and method.replace("_", "-") in SAMPLES_FIELD:
        _deprecated("--steps", "--samples", f"{method}'s samples")
        steps, samples = None, steps
    with _status() as say:
        report = explain_job(
            _model(model, mean, std),
            data,
            method,
            n=n,
            steps=steps,
            samples=samples,
            target=target,
            batch_size=batch_size,
            seed=seed,
            device=device,
            backend=_backend(backend, workers, scheduler, shard_size),
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.explain(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def verify(
    onnx_file: Path = typer.Argument(..., help="The network (ONNX)."),
    vnnlib_file: Path = typer.Argument(..., help="The property (VNN-LIB)."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds."),
    out_file: Path | None = typer.Option(None, "--out", help="Result file in VNN-COMP's format."),
    strategy: str = typer.Option(
        "auto",
        "--strategy",
        help="auto, input-split, relu-split, nonlinear-split or bounds (no branching).",
    ),
    network: list[str] = typer.Option(
        [], "--network", help="NAME=PATH: the ONNX file of a VNN-LIB 2.0 query's network NAME."
    ),
    db: Path | None = DB,
) -> None:
    """Verify one instance (VNN-LIB 1.0 or 2.0); a one-line summary, then holds, violated,
    timeout, unknown or error (the last line)."""
    from robustlab.jobs.verify import history_entry, parse_networks, verify_job

    if out_file is not None:
        output_file(out_file, create=False)
    if db is not None:
        output_file(db, "--db", create=False)
    result = verify_job(onnx_file, vnnlib_file, timeout=timeout, strategy=strategy,
                        networks=parse_networks(network), out=out_file)  # fmt: skip
    store.record(_command(), **history_entry(result, onnx_file, vnnlib_file, out_file), db=db)
    out.print(result.summary(), markup=False, highlight=False, soft_wrap=True)
    out.print(result.verdict, markup=False, highlight=False)
    if result.verdict == "error":  # bad input: the word on stdout, the reason on stderr, exit 2
        raise RobustlabError(result.message)


@app.command("verify-benchmark")
def verify_benchmark(
    instances: Path = typer.Argument(..., help="instances.csv: onnx,vnnlib,timeout per row."),
    backend: str = typer.Option("local", "--backend", help="local (process pool) or dask."),
    workers: int = typer.Option(1, "--workers", min=1),
    timeout_scale: float = typer.Option(1.0, "--timeout-scale", min=0.0),
    timeout_cap: float | None = typer.Option(
        None, "--timeout-cap", help="Cap every instance's timeout at this many seconds."
    ),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address."),
    results_db: Path | None = typer.Option(
        None, "--results-db", help="Results database (default: beside --out)."
    ),
    old_db: Path | None = typer.Option(None, "--db", hidden=True, help="Deprecated: --results-db."),
    out_file: Path = typer.Option(Path("results.csv"), "--out"),
    expected: Path | None = typer.Option(
        None, "--expected", help="expected.csv to count wrong answers."
    ),
) -> None:
    """Run a benchmark; resumes where an interrupted run stopped."""
    from rich.progress import Progress

    from robustlab.jobs.verify import check_instances, expected_answers
    from robustlab.verify.runner import run_benchmark, summarize

    check_instances(instances, timeout_scale)  # before any work
    if old_db is not None:
        _deprecated(
            "--db", "--results-db", "the results database (--db is the run history elsewhere)"
        )
        results_db = results_db or old_db
    output_file(out_file, create=False)
    db = (
        output_file(results_db, "--results-db", False)
        if results_db
        else out_file.with_suffix(".sqlite")
    )
    known = expected_answers(expected) if expected else None  # before any work
    output_file(out_file)  # the folders, now that the work starts
    output_file(db, "--results-db")
    with Progress(console=err, disable=not err.is_terminal) as bar:
        task = bar.add_task("verifying", total=None)

        def on_result(inst, verdict, seconds, k, total):
            bar.update(
                task,
                completed=k,
                total=total,
                description=f"{Path(inst.vnnlib).name}: {verdict} ({seconds:.1f} s)",
            )

        try:
            results = run_benchmark(
                instances,
                db=db,
                out_csv=out_file,
                backend=backend,
                workers=workers,
                timeout_scale=timeout_scale,
                timeout_cap=timeout_cap,
                scheduler=scheduler,
                on_result=on_result,
            )
        except sqlite3.DatabaseError as e:  # --db names another kind of file
            raise RobustlabError(
                f"--results-db {db}: not a usable results database ({e})"
            ) from None
    _show(console.verify_benchmark(summarize(results, known), instances))
    out.print(f"results: {out_file}")


@app.command()
def train(
    arch: str = typer.Option(..., "--arch", help="mlp, cnn, or an .onnx file's architecture."),
    data: str = typer.Option(..., "--data", help="digits (its training split), .npz or .csv."),
    method: str = typer.Option(
        ...,
        "--method",
        help="standard, pgd-at, trades, fast-at, gaussian, ibp, crown-ibp, interpolated-at, "
        "mixup, hr, lipschitz, or a comma-separated list (one model each and a comparison table).",
    ),
    eps: float = typer.Option(
        ..., "--eps", parser=_eps, help="Linf radius, e.g. 0.03 or 8/255 (gaussian: noise sigma)."
    ),
    epochs: int = typer.Option(20, "--epochs", min=1),
    out_file: Path = typer.Option(Path("model.onnx"), "--out", help="The trained ONNX model."),
    test_data: str | None = typer.Option(
        None, "--test-data", help="Evaluation data (default: digits' test split, or 20% held out)."
    ),
    n: int | None = typer.Option(None, "--n", help="Evaluate on the first N test examples."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: float = typer.Option(1e-2, "--lr"),
    sigma: float | None = typer.Option(
        None, "--sigma", help="gaussian: noise sigma (default eps)."
    ),
    finetune: bool = typer.Option(False, "--finetune", help="Start from the .onnx file's weights."),
    suite: str = typer.Option("fast", "--suite", help="Attack suite for robust accuracy."),
    seed: int = typer.Option(0, "--seed"),
    l2_eps: float | None = typer.Option(
        None, "--l2-eps", help="Also evaluate at this L2 radius; lipschitz trains for it."
    ),
    hr_alpha: float | None = typer.Option(
        None, "--hr-alpha", help="hr: poisoning share alpha in [0, 1) (default 0.05)."
    ),
    hr_r: float | None = typer.Option(
        None, "--hr-r", help="hr: KL radius r >= 0 (default 0.1); the evasion radius is --eps."
    ),
    optimizer: str = typer.Option(
        "adam", "--optimizer", help="adam (cosine decay) or sgd (momentum 0.9, step decay)."
    ),
    iat_adversary: str | None = typer.Option(
        None,
        "--iat-adversary",
        help="interpolated-at's attack: clean (Algorithm 1) or interpolated (on the mixed inputs).",
    ),  # fmt: skip
    mix: str | None = typer.Option(
        None, "--mix", help="mixup, interpolated-at: input (default) or manifold (a hidden layer)."
    ),
    mix_alpha: float | None = typer.Option(
        None, "--mix-alpha", help="mixup, interpolated-at: lambda ~ Beta(alpha, alpha), default 1."
    ),
    select: str = typer.Option(
        "last",
        "--select",
        help="Keep the last epoch, or best: the best PGD-10 accuracy on 20% of the training data "
        "held out.",
    ),
    certify_training: bool = typer.Option(
        False,
        "--certify-training",
        help="FullCert: bound SGD training (method standard, an MLP) for training data moved by "
        "--delta per feature; certified test predictions.",
    ),
    delta: float = typer.Option(1e-3, "--delta", help="--certify-training: poisoning budget."),
    report_file: Path | None = typer.Option(
        None, "--report", help="Result JSON (default: beside --out)."
    ),
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Train (adversarially, certifiably, with noise); save ONNX, evaluate, compare methods."""
    from robustlab.jobs.train import train_job

    _outputs(out_file, db)
    if report_file is not None:
        output_file(report_file, "--report", create=False)
    with _status() as say:
        report = train_job(
            arch,
            data,
            method,
            eps,
            epochs=epochs,
            out=out_file,
            test_data=test_data,
            n=n,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            sigma=sigma,
            finetune=finetune,
            suite=suite,
            l2_eps=l2_eps,
            hr_alpha=hr_alpha,
            hr_r=hr_r,
            certify_training=certify_training,
            delta=delta,
            optimizer=optimizer,
            iat_adversary=iat_adversary,
            mix=mix,
            mix_alpha=mix_alpha,
            select=select,
            device=device,
            progress=say,
        )
    report_file = report_file or out_file.with_suffix(".json")
    run_id = _save(report, report_file, db)
    _show(console.train(report))
    out.print(f"model: {', '.join(report['onnx'])}\nresult: {report_file}\nrun id: {run_id}")


@app.command()
def smooth(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:mlp."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    sigma: float = typer.Option(..., "--sigma", help="Gaussian noise sigma."),
    n0: int = typer.Option(100, "--n0", help="Selection samples per input."),
    samples: int = typer.Option(100_000, "--samples", help="Estimation samples per input."),
    alpha: float = typer.Option(0.001, "--alpha", help="Failure probability."),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    n_examples: int | None = typer.Option(None, "--examples", hidden=True, help="Deprecated: --n."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    availability: float | None = typer.Option(
        None, "--availability", help="Attack abstention inside this radius (availability)."
    ),
    availability_norm: str = typer.Option("2", "--availability-norm", help="2 or inf."),
    out_file: Path = typer.Option(Path("smooth.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    backend: str = BACKEND,
    workers: int = WORKERS,
    scheduler: str | None = SCHEDULER,
    shard_size: int | None = SHARD_SIZE,
    db: Path | None = DB,
) -> None:
    """Randomized smoothing: smoothed accuracy and certified L2 radii (Cohen et al.)."""
    from robustlab.jobs.smooth import smooth_job

    _outputs(out_file, db)
    if n_examples is not None:
        if n is not None:
            raise RobustlabError(
                "--examples is the old name of --n (examples; Monte-Carlo samples are --samples);"
                f" found both --n {n} and --examples {n_examples}"
            )
        _deprecated("--examples", "--n", "examples")
        n = n_examples
    with _status() as say:
        report = smooth_job(
            _model(model, mean, std),
            data,
            sigma,
            n0=n0,
            samples=samples,
            alpha=alpha,
            batch_size=batch_size,
            n=n,
            seed=seed,
            availability_eps=availability,
            availability_norm=availability_norm,
            device=device,
            backend=_backend(backend, workers, scheduler, shard_size),
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.smooth(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


def _floats(text: str | None, flag: str) -> list[float]:
    """A comma-separated list of numbers from an option ("" or "none": an empty list)."""
    if text is None or text.strip().lower() in ("", "none"):
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RobustlabError(
            f"{flag} expects numbers separated by commas; found {text!r}"
        ) from None


@app.command()
def sensitivity(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: float | None = typer.Option(
        None,
        "--eps",
        parser=_eps,
        help="Linf radius for robust and certified accuracy (none: clean only).",
    ),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    samples: int = typer.Option(64, "--samples", help="Hutchinson samples per layer."),
    iterations: int = typer.Option(50, "--iterations", help="Power-iteration passes at most."),
    noise: str = typer.Option(
        "0,0.05,0.1,0.2,0.3,0.5", "--noise", help="Relative weight-noise sizes (none: skip)."
    ),
    draws: int = typer.Option(3, "--draws", help="Noise draws per size."),
    robust_n: int = typer.Option(100, "--robust-n", help="Examples attacked per setting."),
    suite: str = typer.Option("fast", "--suite", help="Attack suite for robust accuracy."),
    formats: str = typer.Option(
        "float16,bfloat16,int8", "--formats", help="Whole-model precisions (none: skip)."
    ),
    layer_formats: str = typer.Option(
        "int8", "--layer-formats", help="Precisions applied one layer at a time (none: skip)."
    ),
    certify_n: int = typer.Option(100, "--certify-n", help="Examples certified per setting."),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Data calibrating int8 activations (default: --data)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("sensitivity.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Per layer: Hessian trace and top eigenvalue, Fisher, weight noise, emulated precision."""
    from robustlab.jobs.sensitivity import sensitivity_job

    _outputs(out_file, db)
    levels = _floats(noise, "--noise")
    with _status() as say:
        report = sensitivity_job(
            _model(model, mean, std),
            data,
            eps=eps,
            n=n,
            samples=samples,
            iterations=iterations,
            noise_levels=levels,
            draws=draws,
            robust_n=robust_n,
            suite=suite,
            formats=formats,
            layer_formats=layer_formats,
            certify_n=certify_n,
            calibration=calibration,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.sensitivity(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def prune(
    model: str = typer.Option(
        ..., "--model", help="The dense model: ONNX / TorchScript or zoo:cnn."
    ),
    data: str = typer.Option(..., "--data", help="digits (its training split), .npz or .csv."),
    sparsity: str = typer.Option(
        "0.5,0.8,0.9,0.95",
        "--sparsity",
        help="Share of weights removed, or a comma-separated list.",
    ),
    method: str = typer.Option(
        "magnitude", "--method", help="magnitude, hydra, pwoa, or a comma-separated list."
    ),
    structure: str = typer.Option(
        "unstructured", "--structure", help="unstructured or channel (output channels)."
    ),
    objective: str = typer.Option(
        "pgd-at", "--objective", help="Fine-tuning loss: pgd-at, trades, crown-ibp, ... (not pwoa)."
    ),
    eps: float = typer.Option(
        ..., "--eps", parser=_eps, help="Linf radius (training and evaluation), e.g. 8/255."
    ),
    epochs: int = typer.Option(10, "--epochs", help="Fine-tuning epochs (every method)."),
    score_epochs: int = typer.Option(
        10, "--score-epochs", help="HYDRA's score epochs or PwoA's ADMM epochs."
    ),
    out_file: Path = typer.Option(
        Path("pruned.onnx"), "--out", help="Models as OUT-<method>-<percent>.onnx."
    ),
    test_data: str | None = typer.Option(
        None, "--test-data", help="Evaluation data (default: digits' test split, or 20% held out)."
    ),
    n: int | None = typer.Option(None, "--n", help="Evaluate on the first N test examples."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate (Adam)."),
    suite: str = typer.Option("fast", "--suite", help="Attack suite for robust accuracy."),
    seed: int = typer.Option(0, "--seed"),
    report_file: Path | None = typer.Option(
        None, "--report", help="Result JSON (default: beside --out)."
    ),
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Prune (magnitude, HYDRA, PwoA), fine-tune, export ONNX, evaluate: robustness against sparsity."""
    from robustlab.jobs.compress import prune_job

    _outputs(out_file, db)
    if report_file is not None:
        output_file(report_file, "--report", create=False)
    with _status() as say:
        report = prune_job(
            model,
            data,
            _floats(sparsity, "--sparsity") or [],
            method,
            structure=structure,
            objective=objective,
            eps=eps,
            epochs=epochs,
            score_epochs=score_epochs,
            test_data=test_data,
            n=n,
            out=out_file,
            batch_size=batch_size,
            lr=lr,
            suite=suite,
            seed=seed,
            device=device,
            progress=say,
        )
    report_file = report_file or out_file.with_suffix(".json")
    run_id = _save(report, report_file, db)
    _show(console.prune(report))
    out.print(f"models: {', '.join(report['onnx'])}\nresult: {report_file}\nrun id: {run_id}")


@app.command()
def patch(
    standard: str = typer.Option(..., "--standard", help="The standard model M0."),
    robust: str = typer.Option(..., "--robust", help="The robust model M1 (same architecture)."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: float = typer.Option(
        ..., "--eps", parser=_eps, help="Linf radius for robust and certified accuracy, e.g. 8/255."
    ),
    scale: str = typer.Option(
        "0,0.25,0.5,0.75,1,1.25", "--scale", help="Scales A of the patch (comma-separated)."
    ),
    layers: int | None = typer.Option(
        None, "--layers", help="Patch the first K layers (default: the first half)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="The model to patch (default: the standard model)."
    ),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    suite: str = typer.Option("fast", "--suite", help="Attack suite for robust accuracy."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("patch.json"), "--out", help="Result JSON."),
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """A robust weight signature (M1 - M0 on the shallow layers) added with scale A, evaluated."""
    from robustlab.jobs.compress import patch_job

    _outputs(out_file, db)
    with _status() as say:
        report = patch_job(
            standard,
            robust,
            data,
            _floats(scale, "--scale"),
            eps=eps,
            target_src=target,
            layers=layers,
            n=n,
            suite=suite,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.patch(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def mix(
    accurate: str = typer.Option(
        ..., "--accurate", help="The accurate model (ONNX / TorchScript)."
    ),
    robust: str = typer.Option(..., "--robust", help="The robust model (ONNX / TorchScript)."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: float = typer.Option(..., "--eps", help="Radius of the end-to-end attack."),
    norm: str = typer.Option("inf", "--norm", help="inf or 2."),
    strengths: str = typer.Option(
        "1,0.99,0.98,0.95,0.9,0.8",
        "--strengths",
        help="Shares of the robust model's robust points each mixture keeps (fitted).",
    ),  # fmt: skip
    fit_share: float = typer.Option(0.5, "--fit-share", help="Share of the data to fit on."),
    suite: str = typer.Option("fast", "--suite", help="fast or standard (AutoAttack's)."),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("mix.onnx"), "--out", help="The chosen mixture (ONNX)."),
    report_file: Path | None = typer.Option(
        None, "--report", help="Result JSON (default: beside --out)."
    ),
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Mix an accurate and a robust model (MixedNUTS); clean / robust frontier over strengths."""
    from robustlab.jobs.mix import mix_job

    _outputs(out_file, db)
    if report_file is not None:
        output_file(report_file, "--report", create=False)
    with _status() as say:
        report = mix_job(accurate, robust, data, eps, norm, strengths=strengths,
                         fit_share=fit_share, suite=suite, n=n, seed=seed,
                         batch_size=batch_size, out=out_file, device=device,
                         progress=say)  # fmt: skip
    report_file = report_file or out_file.with_suffix(".json")
    run_id = _save(report, report_file, db)
    _show(console.mix(report))
    out.print(f"model: {report['onnx']} (*)\nresult: {report_file}\nrun id: {run_id}")


@app.command()
def conformal(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage level (target 1 - alpha)."),
    eps: float = typer.Option(..., "--eps", help="Radius of the threat model."),
    norm: str = typer.Option("inf", "--norm", help="inf or 2."),
    sigma: float = typer.Option(0.25, "--sigma", help="RSCP+ noise sigma."),
    samples: int = typer.Option(512, "--samples", help="RSCP+ noise draws per input."),
    beta: float = typer.Option(0.001, "--beta", help="RSCP+ Monte Carlo failure probability."),
    bounds: str = typer.Option("crown", "--bounds", help="VRCP bound method (crown, ibp, ...)."),
    cal_share: float = typer.Option(0.5, "--cal-share", help="Share of the data to calibrate on."),
    steps: int = typer.Option(40, "--steps", help="Attack steps."),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    batch_size: int = typer.Option(1000, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("conformal.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Conformal sets (split, RSCP+, VRCP): coverage and size, clean and under attack."""
    from robustlab.jobs.conformal import conformal_job

    _outputs(out_file, db)
    with _status() as say:
        report = conformal_job(_model(model, mean, std), data, alpha, eps, norm, sigma=sigma,
                               n_samples=samples, beta=beta, bound_method=bounds,
                               cal_share=cal_share, steps=steps, n=n, seed=seed,
                               batch_size=batch_size, device=device, progress=say)  # fmt: skip
    run_id = _save(report, out_file, db)
    _show(console.conformal(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def detect(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    eps: float = typer.Option(0.1, "--eps", help="Radius of the attacks."),
    norm: str = typer.Option("inf", "--norm", help="inf or 2."),
    train_data: str | None = typer.Option(
        None, "--train-data", help="Encoder data (default: digits' training split, else half)."
    ),
    attacks: str = typer.Option(
        "fgsm,pgd,apgd-ce,apgd-t,square", "--attacks", help="Attacks to detect (comma-separated)."
    ),
    k: int = typer.Option(16, "--k", help="Augmented neighbours per input."),
    fpr: float = typer.Option(0.05, "--fpr", help="False-positive rate of the threshold."),
    epochs: int = typer.Option(40, "--epochs", help="Encoder training epochs."),
    adaptive_steps: int = typer.Option(50, "--adaptive-steps", help="Adaptive attack steps."),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("detect.json"), "--out", help="Result JSON."),
    mean: str | None = MEAN,
    std: str | None = STD,
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Detect adversarial examples (BEYOND): AUROC per attack and an adaptive attack beside."""
    from robustlab.jobs.detect import detect_job

    _outputs(out_file, db)
    with _status() as say:
        report = detect_job(_model(model, mean, std), data, eps, norm, train_data=train_data,
                            attacks=attacks, k=k, fpr=fpr, encoder_epochs=epochs,
                            adaptive_steps=adaptive_steps, n=n, seed=seed, device=device,
                            progress=say)  # fmt: skip
    run_id = _save(report, out_file, db)
    _show(console.detect(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@app.command()
def repair(
    model: str = typer.Option(
        ..., "--model", help="The model to repair: ONNX / TorchScript or zoo:mlp."
    ),
    spec: list[str] = typer.Option(None, "--spec", help="A VNN-LIB property (repeat the flag)."),
    data: str | None = typer.Option(
        None, "--data", help="Data: the anchor, and with --eps the local robustness properties."
    ),
    eps: float | None = typer.Option(None, "--eps", help="Linf radius of local robustness."),
    n: int = typer.Option(100, "--n", min=1, help="Properties around the first N examples."),
    test_data: str | None = typer.Option(
        None, "--test-data", help="Accuracy before and after on these (default: --data)."
    ),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Verify / fine-tune rounds at most."),
    epochs: int = typer.Option(2, "--epochs", min=1, help="Fine-tuning epochs per round."),
    lr: float = typer.Option(1e-4, "--lr", help="Fine-tuning learning rate (Adam)."),
    penalty: float = typer.Option(3.0, "--penalty", help="Weight of the violated margins."),
    margin: float = typer.Option(0.1, "--margin", help="Margin each property must keep."),
    anchor_weight: float = typer.Option(
        1.0, "--anchor-weight", help="Weight of the original outputs' squared error."
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per property and round."),
    domain: str | None = typer.Option(
        None, "--domain", help="A VNN-LIB file whose input box the anchor samples (no --data)."
    ),
    region_samples: int = typer.Option(
        0, "--region-samples", help="Uniform samples of each property's box in the hinge."
    ),
    boxes: int = typer.Option(0, "--boxes", help="Sub-boxes per property whose bounds train."),
    box_weight: float = typer.Option(0.01, "--box-weight", help="Weight of the bound hinge."),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("repaired.onnx"), "--out", help="The repaired ONNX."),
    report_file: Path | None = typer.Option(
        None, "--report", help="Result JSON (default: beside --out)."
    ),
    db: Path | None = DB,
) -> None:
    """Counterexample-guided repair: verify, fine-tune on counterexamples, until all properties hold."""
    from robustlab.jobs.repair import repair_job

    _outputs(out_file, db)
    if report_file is not None:
        output_file(report_file, "--report", create=False)
    with _status() as say:
        report = repair_job(
            model,
            specs=spec or None,
            data_src=data,
            eps=eps,
            n=n,
            test_data=test_data,
            out=out_file,
            rounds=rounds,
            epochs=epochs,
            lr=lr,
            penalty=penalty,
            margin=margin,
            anchor_weight=anchor_weight,
            timeout=timeout,
            domain=domain,
            region_samples=region_samples,
            boxes=boxes,
            box_weight=box_weight,
            seed=seed,
            progress=say,
        )
    report_file = report_file or out_file.with_suffix(".json")
    run_id = _save(report, report_file, db)
    _show(console.repair(report))
    out.print(f"model: {report['onnx']}\nresult: {report_file}\nrun id: {run_id}")


@app.command()
def blindspots(
    model: str = typer.Option(..., "--model", help="ONNX / TorchScript file or zoo:cnn."),
    data: str = typer.Option(..., "--data", help="digits, or an .npz / .csv file."),
    n: int | None = typer.Option(None, "--n", help="Use the first N examples."),
    pairs: int = typer.Option(20, "--pairs", min=1, help="Level-set traversals (source, target)."),
    steps: int = typer.Option(200, "--steps", min=1, help="Steps per traversal."),
    tol: float = typer.Option(0.02, "--tol", help="Confidence kept within this of its start."),
    shape_pairs: int = typer.Option(500, "--shape-pairs", min=1, help="Cue-conflict images."),
    patch: int = typer.Option(2, "--patch", min=1, help="Texture patch size (pixels)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the shape image."),
    seed: int = typer.Option(0, "--seed"),
    out_file: Path = typer.Option(Path("blindspots.json"), "--out", help="Result JSON."),
    device: str = DEVICE,
    db: Path | None = DB,
) -> None:
    """Blind spots: level-set traversal between inputs of different classes, shape bias."""
    from robustlab.jobs.blindspots import blindspots_job

    _outputs(out_file, db)
    with _status() as say:
        report = blindspots_job(
            model,
            data,
            n=n,
            n_pairs=pairs,
            n_steps=steps,
            tol=tol,
            shape_pairs=shape_pairs,
            patch=patch,
            alpha=alpha,
            seed=seed,
            device=device,
            progress=say,
        )
    run_id = _save(report, out_file, db)
    _show(console.blindspots(report))
    out.print(f"result: {out_file}\nrun id: {run_id}")


@runs_app.command("list")
def runs_list(
    limit: int = typer.Option(50, "--limit", min=1),
    metrics: bool = typer.Option(
        False, "--metrics", help="Add a column with every metric each run recorded."
    ),
    db: Path | None = DB,
) -> None:
    """The most recent runs."""
    _show(console.runs_list(store.list_runs(db, limit), metrics, store.format_value))


@runs_app.command("show")
def runs_show(run_id: int = typer.Argument(...), db: Path | None = DB) -> None:
    """One run, as JSON."""
    out.print_json(json.dumps(store.get_run(run_id, db).to_dict()))


@runs_app.command("compare")
def runs_compare(
    run_ids: list[int] = typer.Argument(..., help="Two or more run ids."),
    html: Path = typer.Option(Path("compare.html"), "--out", help="The side-by-side page."),
    db: Path | None = DB,
) -> None:
    """Runs side by side: settings and metrics (table), and their reports on one page (HTML)."""
    from robustlab.report.compare import write_compare

    if len(run_ids) < 2:
        raise RobustlabError(f"runs compare expects at least two run ids; found {len(run_ids)}")
    output_file(html, create=False)
    _show(console.rows(*store.compare(run_ids, db)))
    write_compare(run_ids, html, db)
    out.print(f"page: {html}")


def main() -> None:
    """Entry point: bad input is one line on stderr and exit code 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except RobustlabError as e:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        _fail(f"error: {_flagged(e, command)}", 2)
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted", 130)
    except Exception as e:
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # usage errors
            message = e.format_message().strip()
            _fail(f"error: {message}" if message else "", 2)
        if os.environ.get("ROBUSTLAB_DEBUG"):
            traceback.print_exc()
        _fail(
            f"internal error ({type(e).__name__}: {e}); rerun with ROBUSTLAB_DEBUG=1 for details", 1
        )
    sys.exit(code if isinstance(code, int) else 0)


# library parameters whose flag is not ``--<param>``: (command, parameter) -> flag
_RENAMED = {("audit", "sigma"): "--smoothing"}


def _flagged(e: RobustlabError, command: str | None = None) -> str:
    """The message of a library error that names its parameter (``n must be ...``) in the
    command line's words (``--n must be ...``)."""
    message, param = str(e), getattr(e, "param", None)
    if param and message.startswith(param):
        flag = _RENAMED.get((command, param), f"--{param.replace('_', '-')}")
        return f"{flag}{message[len(param) :]}"
    return message


def _fail(message: str, code: int) -> None:
    if message:
        err.print(" ".join(message.split()), markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)

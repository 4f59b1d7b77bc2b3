"""What ``robustlab audit`` and ``robustlab demo`` do: load, run the stages of a profile within
its time budget, summarise; ``report.json`` is rewritten after every stage when ``out`` is set."""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import shlex
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import matplotlib
import onnxruntime
import scipy
import sklearn
import torch

from robustlab.audit.adversarial import adversarial_stage
from robustlab.audit.attacks import attack_stage, clean_stage
from robustlab.audit.budget import Clock
from robustlab.audit.certified import allowed_methods, certify_stage
from robustlab.audit.decide import abstain_stage, conformal_stage, detect_stage, mix_stage
from robustlab.audit.natural import natural_reason, natural_stage
from robustlab.audit.profiles import Profile, default_eps, get_profile, headline_eps
from robustlab.audit.proofs import with_proof_features
from robustlab.audit.runner import Context, run_stages, write_json
from robustlab.audit.sensitivity import sensitivity_stage
from robustlab.audit.smoothing import smoothing_stage
from robustlab.audit.summary import summarise
from robustlab.audit.weights import weights_stage
from robustlab.errors import RobustlabError
from robustlab.jobs.common import (
    check_eps,
    check_eps_on,
    load_beside,
    prepare,
    report_head,
    versions,
)
from robustlab.jobs.mix import check_pair
from robustlab.report import write_report_dir
from robustlab.shards import Backend, session
from robustlab.threat import parse_norm

Progress = Callable[[str], None]
DEMO_EPS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


def _versions() -> dict:

    return {
        **versions(),
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def _digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _command(model_src, data_src, eps, norm, profile, **opts) -> str | None:
    """The command line that reproduces the run (None for an in-memory model or data)."""
    if not isinstance(model_src, (str, Path)) or not isinstance(data_src, (str, Path)):
        return None
    args = ["robustlab", "audit", "--model", str(model_src), "--data", str(data_src),
            "--eps", ",".join(f"{e:g}" for e in eps), "--norm", norm, "--profile", profile]  # fmt: skip
    for key, value in opts.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return shlex.join(args)


def _backend_options(backend: Backend) -> dict:
    """The command-line options of a backend other than the default (for ``reproduce``)."""
    if backend == Backend():
        return {}
    workers = None if backend.name == "local" or backend.scheduler else backend.workers
    return {"backend": backend.name, "workers": workers, "scheduler": backend.scheduler,
            "shard_size": backend.shard_size}  # fmt: skip


def audit_job(
    model_src,
    data_src,
    eps: Sequence[float] | None = None,
    norm: str = "inf",
    *,
    profile: str | Profile = "quick",
    baseline=None,
    budget: float | None = None,
    sigma: float | None = None,
    conformal: float | None = None,
    detect: bool = False,
    mix_accurate=None,
    abstain: float | None = None,
    weight_sensitivity: bool = False,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    out: Path | str | None = None,
    device="cpu",
    backend: Backend = Backend(),
    progress: Progress | None = None,
    on_stage: Callable[[dict], None] | None = None,
) -> dict:
    """Clean accuracy, the attack suite's curves, certified bounds, corruptions, smoothing (with
    ``sigma``), a sensitivity summary and adversarial examples, each stage within its share of
    ``budget`` seconds (default: the profile's); keys ``headline``, ``curve``, ``per_class``,
    ``flags``, ``stages`` and one per stage (None when it did not finish). ``conformal``: the
    miscoverage alpha of a conformal-sets stage; ``detect``: a BEYOND detection stage;
    ``mix_accurate``: a second (accurate) model mixed with the audited one as the robust member;
    ``abstain``: the certificate radius of a certify-or-abstain stage (availability attack);
    ``weight_sensitivity``: a network-sensitivity stage (Hessian, Fisher, weight noise,
    precision) as section ``weights``. ``backend``: where the stages that shard their points run
    (attacks, bounds, corruptions, smoothing, sensitivity; ``robustlab.shards``), recorded in the
    settings; on Dask one cluster serves every stage."""

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if budget is not None and not budget > 0:
        raise RobustlabError(
            f"budget must be a positive number of seconds; found {budget}", param="budget"
        )
    if sigma is not None and not sigma > 0:
        raise RobustlabError(f"sigma expects a noise sigma > 0; found {sigma}", param="sigma")
    if conformal is not None and not 0 < conformal < 1:
        raise RobustlabError(
            f"conformal expects an alpha in (0, 1); found {conformal}", param="conformal"
        )
    if abstain is not None and not abstain > 0:
        raise RobustlabError(
            f"abstain expects a certificate radius > 0; found {abstain}", param="abstain"
        )
    if batch_size < 1:
        raise RobustlabError(
            f"batch_size must be a positive integer; found {batch_size}", param="batch_size"
        )
    clock = Clock(budget or prof.budget)
    norm = parse_norm(norm)
    eps_list = None if eps is None else check_eps(eps)
    say = progress or (lambda _m: None)
    say("loading the model and the data")
    model, data = prepare(model_src, data_src, n or prof.n, device)
    base = prepare(baseline, data_src, n or prof.n, device)[0] if baseline is not None else None
    accurate = None
    if mix_accurate is not None:
        accurate = load_beside(mix_accurate, data)
        check_pair(model, accurate, data, "mix-accurate model")
    if eps_list is None:
        eps_list = default_eps(norm, data.upper - data.lower, tuple(data.x.shape[1:]))
    eps_list = sorted(set(eps_list))
    check_eps_on(eps_list, norm, data)  # before any work: eps on the 0-255 scale is an error
    ctx = Context(model, data, prof, eps_list, norm, headline_eps(eps_list), seed=seed,
                  batch_size=batch_size, sigma=sigma, baseline=base, backend=backend)  # fmt: skip
    methods, _ = allowed_methods(ctx)
    settings = {
        "profile": prof.name, "eps": eps_list, "norm": norm, "headline_eps": ctx.headline,
        "budget_s": clock.budget, "n": len(data), "seed": seed, "batch_size": batch_size,
        "smoothing_sigma": sigma, "baseline": None if base is None else base.name,
        "suite": prof.suite, "methods": methods, "alpha_scope": prof.alpha_scope,
        "corruptions": prof.corruptions, "severities": prof.severities,
        "max_shift": prof.max_shift, "explain_methods": list(prof.explain_methods),
        "mix_accurate": None if accurate is None else accurate.name, "abstain_radius": abstain,
        "backend": dataclasses.asdict(backend),
    }  # fmt: skip
    report = report_head("audit", model, data, settings)
    report["data"]["digest"] = _digest(data.x, data.y)
    report["versions"] = _versions()
    report.update(status="running", profile=prof.name, norm=norm, profile_table=prof.to_dict())
    report["reproduce"] = _command(model_src, data_src, eps_list, norm, prof.name, n=n,
                                   seed=seed, baseline=baseline, budget=budget, smoothing=sigma,
                                   conformal=conformal, mix_accurate=mix_accurate,
                                   abstain=abstain, **_backend_options(backend))  # fmt: skip
    if mix_accurate is not None and not isinstance(mix_accurate, (str, Path)):
        report["reproduce"] = None  # an in-memory second model: no command line reproduces it
    if report["reproduce"] is not None:
        report["reproduce"] += " --detect" * detect + " --weight-sensitivity" * weight_sensitivity
    nat = natural_reason(ctx)
    stages = [
        ("clean", clean_stage, None),
        ("attacks", attack_stage, None),
        ("certified", with_proof_features(certify_stage), None),
        ("corruptions", None if nat else natural_stage, nat),
        ("smoothing", smoothing_stage if sigma else None, "not asked for (--smoothing SIGMA)"),
        ("sensitivity", sensitivity_stage, None),
        ("examples", adversarial_stage, None),
    ]
    at = [name for name, _, _ in stages].index("sensitivity")  # asked-for stages, listed only then
    asked = [
        ("conformal", partial(conformal_stage, alpha=conformal) if conformal else None),
        ("detect", detect_stage if detect else None),
        ("mix", partial(mix_stage, accurate=accurate) if accurate is not None else None),
        ("abstain", partial(abstain_stage, radius=abstain) if abstain else None),
    ]
    stages[at:at] = [(name, fn, None) for name, fn in asked if fn is not None]
    if weight_sensitivity:
        after = [name for name, _, _ in stages].index("sensitivity") + 1
        stages.insert(after, ("weights", weights_stage, None))
    out_dir = None if out is None else Path(out)
    try:
        with session(backend) as running:  # on Dask: one cluster for all the stages
            ctx.backend = running
            run_stages(ctx, report, stages, clock, out=out_dir, progress=say, on_stage=on_stage)
    except KeyboardInterrupt:
        summarise(ctx, report)
        report["status"] = "interrupted"
        if out_dir is not None:
            write_report_dir(report, out_dir)
        raise
    summarise(ctx, report)
    report["status"] = "complete"
    report["elapsed_s"] = round(clock.elapsed(), 2)
    if out_dir is not None:
        write_json(report, out_dir / "report.json")
    return report


def demo_job(*, progress: Progress | None = None, out: Path | str | None = None, **kw) -> dict:
    """The zoo MLP on digits with the quick profile (trained on first use, then reused)."""
    if progress:
        progress("training (or reusing) the zoo mlp on digits")
    return audit_job("zoo:mlp", "digits", DEMO_EPS, "inf", profile="quick", out=out,
                     progress=progress, **kw)  # fmt: skip

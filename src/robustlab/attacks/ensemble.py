"""The ensemble runner: attacks in sequence with per-sample worst case, over a list of eps, with
reliability flags (AutoAttack, Croce & Hein 2020, arXiv:2003.01690)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from robustlab.attacks import flags as fl
from robustlab.attacks.base import (
    Attack,
    Counted,
    eval_mode,
    margins,
    n_classes_of,
    passes_per_point,
    predict,
    training_mode_layers,
)
from robustlab.attacks.evaluate import attack_points
from robustlab.attacks.restarts import Close
from robustlab.attacks.skip import SKIP_METHODS, certify_points
from robustlab.attacks.suites import suite_attacks
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.inputs import ModelLike, fit
from robustlab.results import Metric, curve_metrics
from robustlab.threat import LpBall, eps_values, on_data, parse_norm

WHITE_BOX = {
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "malt",
    "malt-rest",
    "fab",
    "fab-t",
    "fab-malt",
    "restarts",
    "pgd",
    "fgsm",
    "cw",
    "deepfool",
}
CHECK_POINTS = 64  # points used by the gradient, randomness, re-attack and large-eps checks


@dataclass(frozen=True)
class Examples:
    """The points one attack broke at one eps (indices into the data) and its examples there."""

    attack: str
    eps: float
    index: Tensor
    x_adv: Tensor  # (len(index), *input shape)

    def to_dict(self) -> dict:
        return {"attack": self.attack, "eps": self.eps, "index": self.index.tolist()}


@dataclass(frozen=True)
class SuiteResult:
    """Robust accuracy over a list of eps under an attack suite, per-attack costs and flags."""

    suite: str
    attacks: list[str]
    norm: str
    eps: list[float]  # in the order given
    n: int
    clean_accuracy: float
    robust_accuracy: float  # at the first eps given
    curve: list[dict]  # {eps, robust_accuracy}, in the order given
    per_attack: list[
        dict
    ]  # {attack, eps, n_attacked, n_broken, n_forward, n_backward, seconds, ...}
    flags: list[dict]  # {name, message, value}
    seconds: float
    n_forward: int
    n_backward: int
    robust: list[list[bool]] = field(repr=False, default_factory=list)  # per eps, per example
    certified_skipped: int = 0  # at the first eps: points certified by sound bounds, not attacked
    certification: list[dict] = field(default_factory=list)  # per eps and bound method
    eot: int = 1
    # per eps: the worst-case adversarial examples (the data's shape; clean where none was found)
    x_adv: list[Tensor] = field(repr=False, compare=False, default_factory=list)
    # per eps: the attack that broke each point ("" where none did)
    broken_by: list[list[str]] = field(repr=False, compare=False, default_factory=list)
    # per attack and eps: the points it broke and their adversarial examples
    examples: list[Examples] = field(repr=False, compare=False, default_factory=list)

    def examples_of(self, attack: str, eps: float) -> Examples | None:
        """What one attack broke at ``eps`` (indices and examples), or None when it did not run."""
        for ex in self.examples:
            if ex.attack == attack and ex.eps == float(eps):
                return ex
        return None

    def to_dict(self) -> dict:
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "curve": self.curve,
            "per_attack": self.per_attack,
            "flags": self.flags,
            "suite": self.suite,
            "attacks": self.attacks,
            "norm": self.norm,
            "eps": self.eps,
            "n": self.n,
            "seconds": self.seconds,
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "certified_skipped": self.certified_skipped,
            "certification": self.certification,
            "eot": self.eot,
        }

    def metrics(self) -> list[Metric]:
        """Clean accuracy and robust accuracy at each eps."""
        return [Metric("clean_accuracy", self.clean_accuracy, True), *curve_metrics(self.curve)]


def _large_eps(norm: str, data: Dataset) -> float:
    span = data.upper - data.lower
    return span if norm == "inf" else span * math.sqrt(data.x[0].numel())


def _run(
    model, counted, name, attack, data, idx, threat, batch_size
) -> tuple[Tensor, dict, Tensor, Tensor]:
    f0, b0, t0 = counted.n_forward, counted.n_backward, time.perf_counter()
    out = attack_points(model, counted, attack, data.x[idx], data.y[idx], threat, batch_size)
    rec = {
        "attack": name,
        "eps": float(threat.eps),
        "n_attacked": len(idx),
        "n_broken": int(out.broken.sum()),
        "n_forward": counted.n_forward - f0,
        "n_backward": counted.n_backward - b0,
        "seconds": time.perf_counter() - t0,
        "n_outside": out.n_outside,
    }
    return out.broken, rec, out.x_adv[out.broken], out.margin


def evaluate(
    model: ModelLike,
    data: Dataset,
    eps: Sequence[float],
    norm: str,
    *,
    suite: str = "fast",
    attacks: Sequence[str] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    surrogate: nn.Module | None = None,
    checks: bool = True,
    eot: int = 1,
    skip_certified: bool | Sequence[str] = True,
    progress: Callable[[str], None] | None = None,
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
) -> SuiteResult:
    """Robust accuracy at each eps under ``suite`` ("fast" | "rapid" | "standard") or the named
    ``attacks``.

    Per-sample worst case: each attack runs only on the points still robust, and a point counts
    as broken if any attack breaks it (its candidate re-checked by a plain forward pass and a
    threat-model and data-range check). Eps run in ascending order and a point broken at some eps
    stays broken at every larger one.

    ``skip_certified``: points certified robust by sound bounds count as robust without being
    attacked (``certified_skipped``; never on a randomized model): IBP before the attacks, CROWN
    on what the first attack left, on models small enough and when it saves more attack time than
    it costs; ``True`` for both, or the methods to use. At each larger eps only points certified
    at the previous one are bounded. An attack wrapped in ``Close`` (the rapid suite's last
    stages) runs only on the points whose smallest logit margin over the attacks before it, at
    this eps, stayed below its fraction of their clean margin. ``eot`` > 1 averages the
    gradients of the gradient attacks over that many forward passes. The model is evaluated in eval mode (flagged when dropout or
    batch norm were in training mode) and every submodule's mode restored. ``checks`` adds the
    other reliability flags.
    """
    eps_list, norm = eps_values(eps, "eps"), parse_norm(norm)
    model, data = fit(model, data, device=device)
    if surrogate is not None:
        surrogate, _ = fit(surrogate, data, "surrogate model", device)
    for e in eps_list:
        on_data(LpBall(norm, e), data)  # eps on the 0-255 scale: an error suggesting eps/255
    if batch_size <= 0:
        raise RobustlabError(f"batch_size must be a positive integer; found {batch_size}")
    if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
        raise RobustlabError(f"eot must be a positive integer; found {eot!r}")
    methods = _skip_methods(skip_certified)
    say = progress or (lambda _msg: None)
    flags: list[fl.Flag | None] = [fl.check_mode(training_mode_layers(model))]
    counted = Counted(model)
    start = time.perf_counter()
    with eval_mode(model):
        n_classes = n_classes_of(model, data.x)
        chosen = suite_attacks(
            suite, n_classes, names=attacks, seed=seed, surrogate=surrogate, eot=eot
        )
        correct = predict(counted, data.x, batch_size) == data.y
        clean_margin = None
        if any(isinstance(a, Close) for _, a in chosen):
            clean_margin = margins(counted, data.x, data.y, batch_size)
        randomized = fl.check_randomized(model, data.x[:CHECK_POINTS], eot)
        flags.append(randomized)
        if randomized is not None:
            methods = ()  # bounds of one draw say nothing about the next
        robust = correct.clone()
        per_attack: list[dict] = []
        certification: list[dict] = []
        broken_by: dict[tuple[str, float], Tensor] = {}
        at: dict[float, Tensor] = {}
        x_adv, by = data.x.detach().clone(), [""] * len(data)  # broken points keep their example
        at_x: dict[float, Tensor] = {}
        at_by: dict[float, list[str]] = {}
        examples: list[Examples] = []
        skipped: dict[float, int] = {}
        candidates = correct  # points worth bounding: certified at the previous eps
        for e in sorted(set(eps_list)):
            threat = LpBall(norm, e, data.lower, data.upper)
            cert = torch.zeros_like(robust)
            closest = torch.full((len(data),), torch.inf, dtype=data.x.dtype)  # smallest margin
            bound = partial(_certify, model, data, threat, n_classes, certification, say)
            if e > 0 and "ibp" in methods:
                cert |= bound("ibp", robust & candidates, None)
            for i, (name, attack) in enumerate(chosen if e > 0 else []):
                if i == 1 and "crown" in methods:  # on what the first attack could not break
                    per_pass = per_attack[-1]["seconds"] / max(1, per_attack[-1]["n_backward"])
                    rest = sum(passes_per_point(a) for _, a in chosen[1:])
                    cert |= bound("crown", robust & candidates & ~cert, per_pass * rest)
                idx = (robust & ~cert).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                if isinstance(attack, Close) and clean_margin is not None:
                    idx = idx[closest[idx] < attack.below * clean_margin[idx]]
                    if len(idx) == 0:
                        continue
                broken, rec, found, margin = _run(
                    model, counted, name, attack, data, idx, threat, batch_size
                )
                closest[idx] = torch.minimum(closest[idx], margin.to(closest.dtype))
                robust[idx[broken]] = False
                broken_by[(name, e)] = idx[broken]
                x_adv[idx[broken]] = found.to(x_adv.dtype)
                for i in idx[broken].tolist():
                    by[i] = name
                if len(found):
                    examples.append(Examples(name, e, idx[broken], found))
                per_attack.append(rec)
                say(
                    f"eps={e:g} {name}: broke {rec['n_broken']} of {rec['n_attacked']} "
                    f"in {rec['seconds']:.1f}s; robust accuracy {float(robust.float().mean()):.3f}"
                )
            if e > 0:
                candidates = cert
            skipped[e] = int(cert.sum())
            at[e] = robust.clone()
            at_x[e], at_by[e] = x_adv.clone(), list(by)
        if checks:
            flags += _checks(
                model, counted, data, correct, chosen, broken_by, norm, batch_size, say
            )
            curve_sorted = [
                {"eps": e, "robust_accuracy": float(r.float().mean())} for e, r in at.items()
            ]
            flags.append(fl.check_square(per_attack, len(data), WHITE_BOX))
            flags.append(fl.check_curve(curve_sorted, float(correct.float().mean())))
        flags.append(fl.check_outside(sum(r["n_outside"] for r in per_attack)))
    curve = [
        {
            "eps": e,
            "robust_accuracy": float(at[e].float().mean()),
            "certified_skipped": skipped[e],
        }
        for e in eps_list
    ]
    return SuiteResult(
        suite=suite if attacks is None else "custom",
        attacks=[name for name, _ in chosen],
        norm=norm,
        eps=eps_list,
        n=len(data),
        clean_accuracy=float(correct.float().mean()),
        robust_accuracy=curve[0]["robust_accuracy"],
        curve=curve,
        per_attack=per_attack,
        flags=_dedupe([f.to_dict() for f in flags if f is not None]),
        seconds=time.perf_counter() - start,
        n_forward=counted.n_forward,
        n_backward=counted.n_backward,
        robust=[at[e].tolist() for e in eps_list],
        certified_skipped=curve[0]["certified_skipped"],
        certification=certification,
        eot=eot,
        x_adv=[at_x[e] for e in eps_list],
        broken_by=[at_by[e] for e in eps_list],
        examples=examples,
    )


def _certify(model, data, threat, n_classes, records, say, method, pool, attack_seconds) -> Tensor:
    """The points of ``pool`` that ``method`` certifies (see ``certify_points``)."""
    out = torch.zeros_like(pool)
    idx = pool.nonzero().squeeze(1)
    if len(idx) == 0:
        return out
    got, rec = certify_points(
        model, data.x[idx], data.y[idx], threat, n_classes, method, attack_seconds=attack_seconds
    )
    out[idx[got]] = True
    records.append(rec.to_dict())
    say(
        f"eps={threat.eps:g}: {method} certified {rec.n_certified} of {rec.n_bounded} points bounded"
    )
    return out


def _skip_methods(skip_certified: bool | Sequence[str]) -> tuple[str, ...]:
    if skip_certified is True:
        return SKIP_METHODS
    if skip_certified is False:
        return ()
    methods = tuple(skip_certified)
    if any(m not in SKIP_METHODS for m in methods):
        raise RobustlabError(
            f"skip_certified must be a bool or methods among {', '.join(SKIP_METHODS)}; "
            f"found {skip_certified!r}"
        )
    return methods


def _dedupe(flags: list[dict]) -> list[dict]:
    seen, out = set(), []
    for f in flags:
        if f["name"] not in seen:
            seen.add(f["name"])
            out.append(f)
    return out


def _checks(model, counted, data, correct, chosen, broken_by, norm, batch_size, say) -> list:
    """Gradients, re-attack at a larger eps, and a very large eps."""
    gen = torch.Generator().manual_seed(0)
    ok = correct.nonzero().squeeze(1)
    sample = ok[torch.randperm(len(ok), generator=gen)[:CHECK_POINTS]]
    out = [fl.check_gradients(model, data.x[sample], data.y[sample])]
    eps_sorted = sorted({e for _, e in broken_by})
    for (name, e), idx in broken_by.items():
        larger = [v for v in eps_sorted if v > e]
        if not larger or len(idx) == 0:
            continue
        idx = idx[:16]
        threat = LpBall(norm, larger[0], data.lower, data.upper)
        attack: Attack = dict(chosen)[name]
        broken, _, _, _ = _run(model, counted, name, attack, data, idx, threat, batch_size)
        out.append(fl.check_reattack(int((~broken).sum()), len(idx), name, e, larger[0]))
    white = [(n, a) for n, a in chosen if n in WHITE_BOX]
    if white and len(sample):
        big = _large_eps(norm, data)
        say(f"checking that {white[0][0]} breaks everything at eps={big:g}")
        threat = LpBall(norm, big, data.lower, data.upper)
        broken, _, _, _ = _run(
            model, counted, white[0][0], white[0][1], data, sample, threat, batch_size
        )
        out.append(fl.check_large_eps(1 - float(broken.float().mean()), len(sample), big))
    return out

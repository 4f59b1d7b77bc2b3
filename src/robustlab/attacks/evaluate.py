"""Robust accuracy of a model under an attack, re-checked by a plain forward pass."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    Attack,
    Counted,
    eval_mode,
    input_gradients_only,
    margins,
    predict,
)
from robustlab.data import Dataset
from robustlab.inputs import ModelLike, fit, in_batches
from robustlab.threat import LpBall, ThreatModel, on_data


@dataclass(frozen=True)
class AttackResult:
    """Robust accuracy at one threat model, with the cost of the attack."""

    attack: str
    norm: str
    eps: float
    n: int
    clean_accuracy: float
    robust_accuracy: float
    n_attacked: int
    n_broken: int
    n_forward: int
    n_backward: int
    seconds: float
    robust: list[bool] = field(repr=False, default_factory=list)  # per example
    n_outside: int = 0  # adversarial candidates rejected for leaving the threat model
    # the adversarial examples: the data's shape, the clean input where none was found
    x_adv: Tensor | None = field(repr=False, compare=False, default=None)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(replace(self, x_adv=None)).items() if k != "x_adv"}


def attack_name(attack: object) -> str:
    return getattr(attack, "name", type(attack).__name__)


@dataclass(frozen=True)
class Checked:
    """The outcome of attacking some points: which are broken (re-checked), the candidates, how
    many candidates were rejected for leaving the threat model or the data range, and the logit
    margin at each candidate (z_y - max_{j != y} z_j by the plain forward pass; inf outside)."""

    broken: Tensor
    x_adv: Tensor
    n_outside: int
    margin: Tensor


def attack_points(
    model: nn.Module,
    counted: nn.Module,
    attack: Attack,
    x0: Tensor,
    y0: Tensor,
    threat: ThreatModel,
    batch_size: int,
) -> Checked:
    """Attack ``x0`` through ``counted`` in batches; a point is broken only if its candidate lies
    in the threat model and the data range, is finite, and a plain forward pass of ``model``
    misclassifies it."""
    with input_gradients_only(model):
        parts = in_batches(
            lambda a, b: attack(counted, x0[a:b], y0[a:b], threat).detach(),
            len(x0),
            batch_size,
            model,
            "attack",
        )
        x_adv = torch.cat(parts) if parts else x0.detach().clone()
    inside = threat.contains(x0, x_adv) & torch.isfinite(x_adv).flatten(1).all(1)
    margin = margins(model, torch.where(view(inside, x_adv), x_adv, x0), y0, batch_size)
    margin = torch.where(inside, margin, torch.inf)
    broken = (predict(model, x_adv, batch_size) != y0) & inside
    return Checked(broken, x_adv, int((~inside).sum()), margin)


def run_attack(
    model: ModelLike,
    data: Dataset,
    threat: ThreatModel,
    attack: Attack,
    *,
    batch_size: int = 256,
    robust_before: Tensor | None = None,
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
) -> AttackResult:
    """Attack the examples still robust (clean-correct, and in ``robust_before`` when given).

    Every adversarial example is checked to lie in the threat model and re-evaluated by a plain
    forward pass; only that pass decides whether an example is broken. ``model``: what
    ``load_model`` returns, an ``nn.Module`` or a path; the threat model takes the data's value
    range unless it gives its own (which must be the data's).
    """
    model, data = fit(model, data, device=device)
    threat = on_data(threat, data)
    counted = Counted(model)
    start = time.perf_counter()
    with eval_mode(model):
        correct = predict(counted, data.x) == data.y
        robust = correct.clone() if robust_before is None else correct & robust_before
        idx = robust.nonzero().squeeze(1)
        x_adv = data.x.detach().clone()
        if isinstance(threat, LpBall) and threat.eps == 0:
            idx = idx[:0]
        if len(idx):
            x0, y0 = data.x[idx], data.y[idx]
            out = attack_points(model, counted, attack, x0, y0, threat, batch_size)
            if out.n_outside:
                raise RuntimeError(
                    f"{type(attack).__name__} left the threat model on {out.n_outside} points: a bug"
                )
            robust[idx[out.broken]] = False
            x_adv[idx[out.broken]] = out.x_adv[out.broken].to(x_adv.dtype)
    n = len(data)
    return AttackResult(
        attack=attack_name(attack),
        norm=getattr(threat, "norm", "box"),
        eps=float(getattr(threat, "eps", float("nan"))),
        n=n,
        clean_accuracy=float(correct.float().mean()),
        robust_accuracy=float(robust.float().mean()),
        n_attacked=len(idx),
        n_broken=int(len(idx) - robust[idx].sum()) if len(idx) else 0,
        n_forward=counted.n_forward,
        n_backward=counted.n_backward,
        seconds=time.perf_counter() - start,
        robust=robust.tolist(),
        x_adv=x_adv,
    )


def view(mask: Tensor, like: Tensor) -> Tensor:
    """A per-example mask (N,) shaped to broadcast against a batch like ``like``."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def robustness_curve(
    model: ModelLike,
    data: Dataset,
    eps: Sequence[float],
    norm: str,
    attack: Attack,
    *,
    batch_size: int = 256,
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
) -> list[AttackResult]:
    """Robust accuracy at each eps (in ascending order), reusing work: an example broken at some eps
    counts as broken at every larger eps and is not attacked again."""
    model, data = fit(model, data, device=device)
    results: dict[float, AttackResult] = {}
    robust = x_adv = None
    for e in sorted(set(float(v) for v in eps)):
        threat = LpBall(norm, e, data.lower, data.upper)
        res = run_attack(model, data, threat, attack, batch_size=batch_size, robust_before=robust)
        if x_adv is not None:  # points broken at a smaller eps keep that example (inside this ball)
            res = replace(res, x_adv=torch.where(view(robust, x_adv), res.x_adv, x_adv))
        robust, x_adv = torch.tensor(res.robust), res.x_adv
        results[e] = res
    return [results[float(e)] for e in eps]

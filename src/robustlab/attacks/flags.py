"""Reliability flags for an attack evaluation, in the spirit of AutoAttack's checks (Croce & Hein
2020, arXiv:2003.01690) and ART's security curve: signs that the robust accuracy overestimates
the model's robustness (gradient masking, randomness, weak attacks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import margin_loss
from robustlab.inputs import batched_logits

SQUARE_MARGIN = 0.002  # AutoAttack's threshold: Square may beat the white-box attacks by this much


@dataclass(frozen=True)
class Flag:
    """A reason to distrust the evaluation; ``value`` quantifies it."""

    name: str
    message: str
    value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_gradients(model: nn.Module, x: Tensor, y: Tensor) -> Flag | None:
    """Input gradients of the margin loss that are zero or not finite (a masked or
    non-differentiable model: quantisation, argmax, thresholds)."""
    if len(x) == 0:
        return None
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(margin_loss(model(xg), y).sum(), xg)
    g = g.flatten(1)
    bad = ~torch.isfinite(g).all(1) | (g.abs().sum(1) == 0)
    if bool(bad.any()):
        k = int(bad.sum())
        return Flag(
            "zero_gradients",
            f"{k} of {len(x)} points have zero or non-finite input gradients: gradient-based "
            "attacks can fail on such a model (gradient masking); trust Square and transfer "
            "results more than the white-box ones",
            k / len(x),
        )
    return None


def check_randomized(model: nn.Module, x: Tensor, eot: int = 1, repeats: int = 3) -> Flag | None:
    """Outputs that differ across calls on the same inputs (a randomized model or defence)."""
    outs = [batched_logits(model, x, max(1, len(x))) for _ in range(repeats)]
    scale = outs[0].abs().amax().clamp_min(1e-12)
    diff = max(float((o - outs[0]).abs().amax() / scale) for o in outs[1:])
    if diff > 1e-5:
        advice = (
            f"gradients were averaged over eot={eot} forward passes; the robust accuracy of a "
            "randomized model is itself random (each point is re-checked by one forward pass)"
            if eot > 1
            else "use expectation over transformation (eot > 1); single-sample gradients "
            "underestimate the attack and the robust accuracy is unreliable"
        )
        return Flag(
            "randomized_model",
            f"outputs differ across calls on the same inputs (relative difference {diff:.2g}): "
            f"{advice}; no point was skipped by sound bounds",
            diff,
        )
    return None


def check_mode(layers: list[str]) -> Flag | None:
    """Dropout or batch-norm layers left in training mode (fra31/auto-attack issue 74)."""
    if not layers:
        return None
    shown = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
    return Flag(
        "training_mode",
        f"{len(layers)} dropout / batch-norm layers were in training mode ({shown}): the model "
        "was evaluated in eval mode (and its mode restored); call model.eval() before any "
        "manual check, or its accuracy will not match",
        float(len(layers)),
    )


def check_square(per_attack: list[dict], n: int, white_box: set[str]) -> Flag | None:
    """The black-box Square attack broke points that the white-box attacks run before it missed."""
    worst = None
    for rec in per_attack:
        if rec["attack"] != "square" or rec["n_broken"] == 0:
            continue
        ran_before = any(
            r["attack"] in white_box and r["eps"] == rec["eps"] and r["n_attacked"]
            for r in per_attack
        )
        if ran_before and rec["n_broken"] / n > SQUARE_MARGIN:
            if worst is None or rec["n_broken"] > worst["n_broken"]:
                worst = rec
    if worst is None:
        return None
    return Flag(
        "square_stronger",
        f"the black-box Square attack broke {worst['n_broken']} points at eps={worst['eps']:g} that "
        "the white-box attacks missed: gradients are probably masked or obfuscated",
        worst["n_broken"] / n,
    )


def check_curve(curve: list[dict], clean: float) -> Flag | None:
    """Robust accuracy that stays flat over a wide range of eps (>= 4x) above zero."""
    pts = sorted((c["eps"], c["robust_accuracy"]) for c in curve if c["eps"] > 0)
    if len(pts) < 2 or pts[-1][0] < 4 * pts[0][0]:
        return None
    if pts[-1][1] > 0 and pts[-1][1] >= pts[0][1] and pts[0][1] < clean:
        return Flag(
            "accuracy_not_decreasing",
            f"robust accuracy stays at {pts[-1][1]:.3f} from eps={pts[0][0]:g} to eps={pts[-1][0]:g}: "
            "the attack may be failing rather than the model being robust",
            pts[-1][1],
        )
    return None


def check_reattack(failed: int, tried: int, attack: str, eps: float, larger: float) -> Flag | None:
    """Points broken at some eps that the same attack fails to break at a larger eps."""
    if tried and failed > max(1, 0.1 * tried):
        return Flag(
            "accuracy_not_decreasing",
            f"{attack} broke {tried} points at eps={eps:g} but failed on {failed} of them at the "
            f"larger eps={larger:g}: the attack is unreliable on this model",
            failed / tried,
        )
    return None


def check_large_eps(robust_fraction: float, tried: int, eps: float) -> Flag | None:
    """Robust accuracy that does not reach ~0 at an eps covering the whole input domain."""
    if tried and robust_fraction > 0.02:
        return Flag(
            "large_eps_not_zero",
            f"{robust_fraction:.1%} of {tried} points stay robust at eps={eps:g}, where every input "
            "in the domain is allowed: the attack is failing (gradient masking or a bug)",
            robust_fraction,
        )
    return None


def check_outside(n_outside: int) -> Flag | None:
    """Adversarial candidates outside the threat model or the data range (rejected)."""
    if n_outside:
        return Flag(
            "left_threat_model",
            f"{n_outside} adversarial candidates left the threat model or the data range and were "
            "rejected: an attack has a bug",
            float(n_outside),
        )
    return None

"""Sound skipping: a point whose margins are proven positive over the whole threat region by a
sound bound (IBP, Gowal et al. 2018, arXiv:1810.12715; then CROWN, Zhang et al. 2018,
arXiv:1811.00866, on models small enough) cannot be broken by any attack, so it counts as robust
without being attacked."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from robustlab.bounds import compute_bounds, margin_spec
from robustlab.threat import ThreatModel

SKIP_METHODS = ("ibp", "crown")  # cheapest first; each bounds only what the previous left
# CROWN only below these sizes: the audit's limits (robustlab.audit.profiles, kept equal by a test)
CROWN_MAX_PARAMS = 5_000_000
CROWN_MAX_INPUTS = 3 * 64 * 64
PROBES = {"ibp": (64,), "crown": (4, 16)}  # points bounded first, to decide whether to go on
BATCH = {"ibp": 256, "crown": 32}  # points per bound computation after the probe


@dataclass(frozen=True)
class Certification:
    """What one bound method certified at one eps, and what it cost (``note``: why it stopped)."""

    method: str
    eps: float
    n_bounded: int
    n_certified: int
    seconds: float
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def crown_fits(model: nn.Module, x: Tensor) -> bool:
    """Whether the model is small enough for CROWN (parameters and inputs per example)."""
    params = sum(p.numel() for p in model.parameters())
    return params <= CROWN_MAX_PARAMS and x[0].numel() <= CROWN_MAX_INPUTS


def _margins_positive(model, x, y, threat, method, n_classes) -> Tensor:

    b = compute_bounds(model, (threat, x), method, C=margin_spec(y, n_classes), bound_upper=False)
    return (b.lower > 0).all(1)


def certify_points(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    n_classes: int,
    method: str,
    *,
    attack_seconds: float | None = None,
) -> tuple[Tensor, Certification]:
    """Which points are certified robust by ``method`` (every margin z_y - z_j has a positive
    sound lower bound over ``threat``).

    The points go in growing batches (``PROBES[method]``, then ``BATCH[method]`` at a time), and
    bounding stops after a probe when it certified none of the points so far, or, given
    ``attack_seconds`` (what the attacks would spend per robust point), when the attack time it
    saves per point (certified fraction x ``attack_seconds``; a fraction of 1 after the first,
    smallest probe) is less than its own time per point. A method that cannot bound the model (an
    unsupported operation) certifies nothing, and the points are attacked as usual; so does CROWN
    on a model too large for it. Returns (certified (N,), the record)."""
    certified = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    eps = float(getattr(threat, "eps", 0.0))
    if method != "ibp" and not crown_fits(model, x):
        return certified, Certification(method, eps, 0, 0, 0.0, "model too large")
    start, done, note = time.perf_counter(), 0, ""
    probes = list(PROBES[method])
    try:
        while done < len(x) and not note:
            end = min(probes[0] if probes else done + BATCH[method], len(x))
            with torch.no_grad():
                certified[done:end] = _margins_positive(
                    model, x[done:end], y[done:end], threat, method, n_classes
                )
            done = end
            if probes and done < len(x):
                first = len(probes) == len(PROBES[method])
                probes.pop(0)
                note = _stop(
                    certified[:done], time.perf_counter() - start, attack_seconds, first, probes
                )
    except Exception as e:  # the bound engine cannot handle this model: attack everything
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        note = f"{type(e).__name__}: {first_line}"
    seconds = time.perf_counter() - start
    return certified, Certification(method, eps, done, int(certified.sum()), seconds, note)


def _stop(certified: Tensor, seconds: float, attack_seconds, first: bool, more: list) -> str:
    """Why bounding should stop after a probe, or "" to go on."""
    frac = float(certified.float().mean())
    if not more and frac == 0:
        return f"certified none of the first {len(certified)} points"
    per_point = seconds / len(certified)
    saved = (1.0 if first and more else frac) * (attack_seconds or 0.0)
    if attack_seconds is not None and saved < per_point:
        return (
            f"not worth it: {per_point:.3g} s per point bounded, to save {saved:.3g} s of "
            "attacks per point"
        )
    return ""

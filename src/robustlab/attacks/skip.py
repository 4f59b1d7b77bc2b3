"""Sound skipping: a point whose margins are proven positive over the whole threat region by a
sound bound (IBP, Gowal et al. 2018, arXiv:1810.12715; then CROWN, Zhang et al. 2018,
arXiv:1811.00866, on models small enough) cannot be broken by any attack, so it counts as robust
without being attacked."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from robustlab.threat import ThreatModel

SKIP_METHODS = ("ibp", "crown")  # cheapest first; each bounds only what the previous left
# CROWN only below these sizes: the audit's limits (robustlab.audit.profiles, kept equal by a test)
CROWN_MAX_PARAMS = 5_000_000
CROWN_MAX_INPUTS = 3 * 64 * 64
CROWN_PROBE = 16  # CROWN bounds the other points only if it certifies one of the first 16
BATCH = {"ibp": 256, "crown": 32}  # points per bound computation


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
    from robustlab.bounds import compute_bounds, margin_spec

    b = compute_bounds(model, (threat, x), method, C=margin_spec(y, n_classes), bound_upper=False)
    return (b.lower > 0).all(1)


def certify_points(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    n_classes: int,
    methods: Sequence[str] = SKIP_METHODS,
) -> tuple[Tensor, list[Certification]]:
    """Which points are certified robust (every margin z_y - z_j has a positive sound lower bound
    over ``threat``), trying ``methods`` in order on the points the previous ones left. A method
    that cannot bound the model (an unsupported operation) certifies nothing, and the points are
    attacked as usual; so does CROWN on a model too large for it, or when it certifies none of
    the first ``CROWN_PROBE`` points it bounds. Returns (certified (N,), one record per method)."""
    certified = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    records: list[Certification] = []
    for method in methods:
        todo = (~certified).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        if method != "ibp" and not crown_fits(model, x):
            records.append(Certification(method, float(threat.eps), 0, 0, 0.0, "model too large"))
            continue
        start, done, note = time.perf_counter(), 0, ""
        batch = BATCH.get(method, 32)
        try:
            while done < len(todo):
                size = CROWN_PROBE if method != "ibp" and done == 0 else batch
                part = todo[done : done + size]
                with torch.no_grad():
                    certified[part] = _margins_positive(
                        model, x[part], y[part], threat, method, n_classes
                    )
                done += len(part)
                if method != "ibp" and done == len(part) and not bool(certified[part].any()):
                    note = f"certified none of the first {len(part)} points"
                    break
        except Exception as e:  # the bound engine cannot handle this model: attack everything
            note = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        n_cert = int(certified[todo].sum())
        records.append(
            Certification(
                method, float(threat.eps), done, n_cert, time.perf_counter() - start, note
            )
        )
        if note and done == 0 and method == "ibp":
            break  # IBP failed on the model: CROWN would too
    return certified, records

"""Certified accuracy: a point is certified when the lower bound of ``logit[y] - logit[j]`` is
positive for every ``j != y`` over the whole threat region."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from robustlab.bounds.api import METHODS, compute_bounds
from robustlab.bounds.lipschitz import global_lipschitz, l2_radius
from robustlab.data import Dataset
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.inputs import ModelLike, batched_logits, fit, in_batches
from robustlab.threat import LpBall, ThreatModel, on_data

# certify's methods: the bound methods, and the margin / Lipschitz radius (no bound propagation)
CERTIFY_METHODS = (*METHODS, "lipschitz")


@dataclass(frozen=True)
class CertifyResult:
    """Certified accuracy at one threat model."""

    method: str
    norm: str
    eps: float
    n: int
    clean_accuracy: float
    certified_accuracy: float
    seconds: float
    certified: list[bool] = field(repr=False, default_factory=list)  # per example
    lipschitz: float | None = None  # the global L2 Lipschitz bound (method "lipschitz")

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.lipschitz is None:
            del out["lipschitz"]
        return out


def margin_spec(y: Tensor, num_classes: int) -> Tensor:
    """Rows ``e_y - e_j`` for every ``j != y``: shape (N, K-1, K)."""
    eye = torch.eye(num_classes, dtype=torch.float64)
    rows = eye[y][:, None, :] - eye[None, :, :]  # (N, K, K): e_y - e_j for every j
    keep = ~torch.nn.functional.one_hot(y, num_classes).bool()
    return rows[keep].view(len(y), num_classes - 1, num_classes)


PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def _certified(model, data, threat, method, idx, k, batch_size, dtype) -> Tensor:
    """Whether each point ``idx`` is certified (lower bounds of every margin positive); batches
    are halved when out of memory (``inputs.in_batches``)."""

    def batch(start: int, stop: int) -> Tensor:
        part = idx[start:stop]
        x0, y0 = data.x[part], data.y[part]
        b = compute_bounds(
            model,
            (threat, x0),
            method,
            C=margin_spec(y0, k),
            bound_upper=False,
            stop_when_positive=True,
            dtype=dtype,
        )
        return (b.lower > 0).all(1)

    out = in_batches(batch, len(idx), batch_size, model, f"bounds:{method}:{dtype}")
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _lipschitz_certified(model, data, threat, idx, batch_size) -> tuple[Tensor, float]:
    """Whether each point ``idx`` has a certified L2 radius (``bounds.lipschitz``) beyond the
    threat's ball (an Linf ball through ``||v||_2 <= sqrt(d) ||v||_inf``), and the bound L."""
    if not isinstance(threat, LpBall):
        raise RobustlabError(
            f"the lipschitz method expects an Lp ball; found {type(threat).__name__}"
        )
    bound = global_lipschitz(model, tuple(data.x.shape[1:]))
    d = data.x[0].numel()
    out = [
        l2_radius(model, data.x[part], data.y[part], bound=bound).certified(
            threat.norm, threat.eps, d
        )
        for part in idx.split(batch_size)
    ]
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)), bound.bound


def certify(
    model: ModelLike,
    data: Dataset,
    threat: ThreatModel,
    method: str = "crown",
    *,
    batch_size: int = 256,
    alpha_batch_size: int = 32,
    precision: str = "float64",
    device=None,  # cpu, cuda or auto (inputs.resolve_device); None: where model and data are
) -> CertifyResult:
    """Certified accuracy of ``model`` on ``data`` under ``threat`` with a bound ``method`` (CROWN
    by default, as on the command line), or with ``"lipschitz"``: the margin / Lipschitz radius (``bounds.lipschitz``, any network).

    Only correctly classified points are bounded; alpha-CROWN runs only on the points CROWN leaves
    uncertified, in small batches that stop optimising once every margin is proven positive.
    ``precision="float32"`` is faster on convolutional networks and batches, equally rigorous
    (its rounding is bounded, see ``bounds/rounding.py``) and slightly looser.
    """
    method = canonical(method, CERTIFY_METHODS)  # alpha_crown: alpha-crown
    if method not in CERTIFY_METHODS:
        raise unknown("bound method", method, CERTIFY_METHODS)
    if precision not in PRECISIONS:
        raise RobustlabError(f"precision must be float64 or float32; found '{precision}'")
    dtype = PRECISIONS[precision]
    model, data = fit(model, data, device=device)
    threat = on_data(threat, data)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = batched_logits(model, data.x, batch_size)
            k = logits.shape[1]
            correct = logits.argmax(1) == data.y
            certified = torch.zeros(len(data), dtype=torch.bool)
            todo = correct.nonzero().squeeze(1)
            first = "crown" if method == "alpha-crown" else method
            lipschitz = None
            if method == "lipschitz":
                certified[todo], lipschitz = _lipschitz_certified(
                    model, data, threat, todo, batch_size
                )
            else:
                certified[todo] = _certified(model, data, threat, first, todo, k, batch_size, dtype)
            if method == "alpha-crown":
                todo = todo[~certified[todo]]
                certified[todo] = _certified(
                    model, data, threat, method, todo, k, alpha_batch_size, dtype
                )
    finally:
        model.train(was_training)
    return CertifyResult(
        method=method,
        norm=getattr(threat, "norm", "box"),
        eps=float(getattr(threat, "eps", 0.0)),
        n=len(data),
        clean_accuracy=float(correct.float().mean()),
        certified_accuracy=float(certified.float().mean()),
        seconds=time.perf_counter() - start,
        certified=certified.tolist(),
        lipschitz=lipschitz,
    )

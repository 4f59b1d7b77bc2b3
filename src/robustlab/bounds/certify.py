"""Certified accuracy: a point is certified when the lower bound of ``logit[y] - logit[j]`` is
positive for every ``j != y`` over the whole threat region."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from robustlab.bounds.ibp import ibp
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel

METHODS = {"ibp": ibp}


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

    def to_dict(self) -> dict:
        return asdict(self)


def margin_spec(y: Tensor, num_classes: int) -> Tensor:
    """Rows ``e_y - e_j`` for every ``j != y``: shape (N, K-1, K)."""
    eye = torch.eye(num_classes, dtype=torch.float64)
    rows = eye[y][:, None, :] - eye[None, :, :]  # (N, K, K): e_y - e_j for every j
    keep = ~torch.nn.functional.one_hot(y, num_classes).bool()
    return rows[keep].view(len(y), num_classes - 1, num_classes)


def get_method(method: str):
    if method not in METHODS:
        raise RobustlabError(f"unknown bound method '{method}'; known: {', '.join(METHODS)}")
    return METHODS[method]


def certify(
    model: nn.Module,
    data: Dataset,
    threat: ThreatModel,
    method: str = "ibp",
    *,
    batch_size: int = 256,
) -> CertifyResult:
    """Certified accuracy of ``model`` on ``data`` under ``threat`` with a bound ``method``."""
    bound = get_method(method)
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat(
                [model(data.x[i : i + batch_size]) for i in range(0, len(data), batch_size)]
            )
            k = logits.shape[1]
            correct = logits.argmax(1) == data.y
            cert = []
            for i in range(0, len(data), batch_size):
                x0, y0 = data.x[i : i + batch_size], data.y[i : i + batch_size]
                lo, hi = threat.box(x0)
                b = bound(model, lo, hi, C=margin_spec(y0, k))
                cert.append((b.lower > 0).all(1))
            certified = torch.cat(cert) & correct
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
    )

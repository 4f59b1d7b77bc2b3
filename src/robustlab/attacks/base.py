"""The attack protocol, the registry by name, losses, and pass counting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel

Objective = Callable[[Tensor, Tensor], Tensor]  # (logits, labels) -> per-example value to maximise


class Attack(Protocol):
    """An attack maps clean inputs to inputs inside the threat model that try to flip the label."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor: ...


REGISTRY: dict[str, type] = {}


def register(name: str):
    """Class decorator adding an attack to the registry under ``name``."""

    def deco(cls: type) -> type:
        REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def get_attack(name: str, **kwargs) -> Attack:
    """An attack instance by registry name."""
    if name not in REGISTRY:
        raise RobustlabError(f"unknown attack '{name}'; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)


def _other_max(logits: Tensor, y: Tensor) -> Tensor:
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1)


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example."""
    return nn.functional.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin: best other logit minus the true logit (> 0 means misclassified)."""
    return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, arXiv:2003.01690), to maximise."""
    top = logits.sort(dim=1, descending=True).values
    third = top[:, 2] if logits.shape[1] > 2 else top[:, -1]
    return margin_loss(logits, y) / (top[:, 0] - third + 1e-12)


LOSSES: dict[str, Objective] = {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}


def get_loss(loss: str | Objective) -> Objective:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise RobustlabError(f"unknown loss '{loss}'; known: {', '.join(LOSSES)}")
    return LOSSES[loss]


class Counted(nn.Module):
    """Wraps a model and counts per-example forward and backward passes through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_forward = 0
        self.n_backward = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.n_forward += n
        if out.requires_grad:
            out.register_hook(lambda g: self._count_backward(n))
        return out

    def _count_backward(self, n: int) -> None:
        self.n_backward += n


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels, computed in batches without gradients."""
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )

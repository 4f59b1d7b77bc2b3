"""Level-set traversal: from a source image toward a target image at constant confidence.

Sahoo, Feizi et al., "Exploring Geometry of Blind Spots in Vision Models" (NeurIPS 2023,
arXiv:2310.19889): each step moves along the component of (target - x) orthogonal to the gradient
of the source class's confidence, plus a correction along the gradient that brings the
confidence back to its initial value; the path stays in the source class's level set, so the
model is blind to everything it travels through.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.results import Metric


@dataclass(frozen=True)
class TraversalResult:
    """Per pair: the end of the path, its length toward the target, and snapshots of it."""

    source_class: Tensor  # (B,)
    target_class: Tensor  # (B,)
    confidence: Tensor  # (B,) the source class's softmax probability at the source
    end_confidence: Tensor  # (B,)
    linf: Tensor  # (B,) ||x_end - x_source||_inf
    l2: Tensor  # (B,) ||x_end - x_source||_2
    fraction: Tensor  # (B,) 1 - ||x_target - x_end||_2 / ||x_target - x_source||_2
    unchanged: Tensor  # (B,) bool: the prediction was the source class at every step
    path: Tensor  # (B, snapshots, *input shape): source, ..., end
    steps: int

    def to_dict(self) -> dict:
        return {
            "source_class": self.source_class.tolist(),
            "target_class": self.target_class.tolist(),
            "confidence": self.confidence.tolist(),
            "end_confidence": self.end_confidence.tolist(),
            "linf": self.linf.tolist(),
            "l2": self.l2.tolist(),
            "fraction": self.fraction.tolist(),
            "unchanged": self.unchanged.tolist(),
            "steps": self.steps,
            "mean_linf": float(self.linf.mean()),
            "mean_l2": float(self.l2.mean()),
            "mean_fraction": float(self.fraction.mean()),
        }

    def metrics(self) -> list[Metric]:
        return [
            Metric("levelset_fraction", float(self.fraction.mean()), False),
            Metric("levelset_linf", float(self.linf.mean()), False),
            Metric("levelset_l2", float(self.l2.mean()), False),
        ]


def _confidence(model: nn.Module, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax probability of class ``c`` per row, its gradient w.r.t. x, and the prediction."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        logits = model(leaf)
        p = logits.softmax(1).gather(1, c[:, None])[:, 0]
        (g,) = torch.autograd.grad(p.sum(), leaf)
    return p.detach(), g, logits.detach().argmax(1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(1)


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def level_set_traversal(
    model: nn.Module,
    source: Tensor,
    target: Tensor,
    *,
    n_steps: int = 200,
    step: float = 0.1,
    tol: float = 0.02,
    lower: float = 0.0,
    upper: float = 1.0,
    snapshots: int = 6,
) -> TraversalResult:
    """Traverse from each ``source`` image toward its ``target`` (same shape) keeping the source
    class's confidence within ``tol`` of its initial value and the prediction unchanged.

    A step of size ``step`` (a fraction of the orthogonal component, adapted: x1.5 after an
    accepted step, /2 after a refused one, at most 1) moves by step * (d - (d.g / g.g) g), d =
    target - x, g the confidence's gradient, plus the Newton correction -(p(x) - p0) g / g.g; the
    candidate is clipped to [lower, upper] and accepted only when the prediction is still the
    source class and the confidence within ``tol`` of p0. Every accepted point is checked, so
    ``unchanged`` holds by construction (reported, not assumed)."""
    if source.shape != target.shape or source.dim() < 2:
        raise RobustlabError(
            f"expected source and target batches of one shape; found {tuple(source.shape)} "
            f"and {tuple(target.shape)}"
        )
    if n_steps < 1 or not 0 < step <= 1 or not tol > 0 or snapshots < 2:
        raise RobustlabError(
            f"expected n_steps >= 1, 0 < step <= 1, tol > 0, snapshots >= 2; found {n_steps}, "
            f"{step}, {tol}, {snapshots}"
        )
    was_training = model.training
    model.eval()
    try:
        x0, xt = source.detach(), target.detach()
        with torch.no_grad():
            logits0 = model(x0)
        c = logits0.argmax(1)
        p0 = logits0.softmax(1).gather(1, c[:, None])[:, 0]
        with torch.no_grad():
            tc = model(xt).argmax(1)
        x = x0.clone()
        eta = torch.full((len(x0),), float(step), dtype=x0.dtype)
        unchanged = torch.ones(len(x0), dtype=torch.bool)
        keep = set(torch.linspace(0, n_steps, snapshots).round().long().tolist())
        path = [x0.clone()]
        for k in range(1, n_steps + 1):
            p, g, _ = _confidence(model, x, c)
            gg = _dot(g, g).clamp_min(torch.finfo(g.dtype).tiny)
            d = xt - x
            perp = d - _rows(_dot(d, g) / gg, g) * g
            corr = -_rows((p - p0) / gg, g) * g
            cand = (x + _rows(eta, x) * perp + corr).clamp(lower, upper)
            with torch.no_grad():
                out = model(cand)
            pc = out.softmax(1).gather(1, c[:, None])[:, 0]
            ok = (out.argmax(1) == c) & ((pc - p0).abs() <= tol)
            x = torch.where(_rows(ok, x), cand, x)
            eta = torch.where(ok, (eta * 1.5).clamp_max(1.0), eta / 2)
            if k in keep:
                path.append(x.clone())
        with torch.no_grad():
            out = model(x)
        unchanged &= out.argmax(1) == c
        end_p = out.softmax(1).gather(1, c[:, None])[:, 0]
    finally:
        model.train(was_training)
    diff = (x - x0).flatten(1)
    total = (xt - x0).flatten(1).norm(dim=1)
    left = (xt - x).flatten(1).norm(dim=1)
    fraction = torch.where(total > 0, 1 - left / total.clamp_min(1e-12), torch.ones_like(total))
    return TraversalResult(
        c,
        tc,
        p0,
        end_p,
        diff.abs().amax(1),
        diff.norm(dim=1),
        fraction,
        unchanged,
        torch.stack(path, 1),
        n_steps,
    )


def pairs(labels: Tensor, n_pairs: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n_pairs`` (source, target) index pairs of different labels, drawn with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    if n < 2 or len(labels.unique()) < 2:
        raise RobustlabError("level-set traversal needs examples of at least two classes")
    src, tgt = [], []
    while len(src) < n_pairs:
        i, j = torch.randint(n, (2,), generator=gen).tolist()
        if labels[i] != labels[j]:
            src.append(i)
            tgt.append(j)
    return torch.tensor(src), torch.tensor(tgt)

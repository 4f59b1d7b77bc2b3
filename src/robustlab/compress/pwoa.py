"""PwoA (Jian et al. 2022, arXiv:2210.04311): pruning a robust model without adversarial examples.
The pruned model (the student) distils the dense robust model (its teacher) with a softened
KL divergence, is regularised by the HSIC bottleneck of its hidden layers (``lambda_x HSIC(X,
Z_l) - lambda_y HSIC(Y, Z_l)``, Ma et al. 2020), and is driven to sparsity by ADMM (Zhang et al.
2018: ``rho / 2 ||W - Z + U||^2`` with ``Z`` the projection of ``W + U`` onto the layer-wise
sparse set, ``U`` the scaled dual), then hard-pruned and retrained with the masks fixed under the
same objective. Defaults follow the authors' MNIST script (temperature 30, distillation weight 10,
lambda_x 2e-4, lambda_y 5e-5, Gaussian kernel width 5, rho 0.01, Adam)."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.compress.masks import (
    Masks,
    apply_masks,
    frozen_masks,
    magnitude_masks,
    magnitude_scores,
    masks_from_scores,
    prunable,
)
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import weight_layers

Progress = Callable[[str], None]


def _centered_gaussian(x: Tensor, sigma: float) -> Tensor:
    d = torch.cdist(x, x).pow(2)
    k = torch.exp(-d / (2 * sigma**2 * x.shape[1]))
    return k - k.mean(0, keepdim=True)


def _centered_linear(x: Tensor) -> Tensor:
    k = x @ x.T
    return k - k.mean(0, keepdim=True)


def hsic(kx_centered: Tensor, ky_centered: Tensor) -> Tensor:
    """The biased HSIC estimate ``tr(Kx H Ky H) / m^2`` from kernels centred on one side (``K H``)."""
    return (kx_centered * ky_centered.T).mean()


@contextlib.contextmanager
def hidden_outputs(model: nn.Module) -> Iterator[list[Tensor]]:
    """The outputs of every Linear / Conv layer but the last, collected on each forward pass."""
    found: list[Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: found.append(out))
        for _, m in weight_layers(model)[:-1]
    ]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class PwoAObjective:
    """Self-distillation plus the HSIC bottleneck; no adversarial example anywhere."""

    temperature: float = 30.0
    alpha: float = 10.0  # distillation weight
    lambda_x: float = 2e-4
    lambda_y: float = 5e-5
    sigma: float = 5.0  # Gaussian kernel width (times sqrt(dimension))

    def loss(self, student: nn.Module, teacher: nn.Module, x: Tensor, y: Tensor, k: int) -> Tensor:
        with torch.no_grad():
            soft = nn.functional.softmax(teacher(x) / self.temperature, 1)
        with hidden_outputs(student) as hidden:
            logits = student(x)
        t2 = self.temperature**2
        kl = nn.functional.kl_div(nn.functional.log_softmax(logits / self.temperature, 1), soft,
                                  reduction="batchmean")  # fmt: skip
        loss = self.alpha * t2 * kl
        if self.lambda_x or self.lambda_y:
            kx = _centered_gaussian(x.flatten(1), self.sigma)
            ky = _centered_linear(nn.functional.one_hot(y, k).to(x.dtype))
            for z in hidden:
                kz = _centered_gaussian(z.flatten(1), self.sigma)
                loss = loss + self.lambda_x * hsic(kx, kz) - self.lambda_y * hsic(ky, kz)
        return loss


def _epochs(
    student, teacher, data, objective, epochs, batch_size, lr, gen, k, extra=None, on_epoch=None
):
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    steps = math.ceil(len(data) / batch_size)
    for epoch in range(epochs):
        if on_epoch:
            on_epoch(epoch)
        order = torch.randperm(len(data), generator=gen)
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            loss = objective.loss(student, teacher, data.x[idx], data.y[idx], k)
            if extra is not None:
                loss = loss + extra()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(loss.detach())


def pwoa_prune(
    model: nn.Module,
    data: Dataset,
    sparsity: float,
    *,
    structure: str = "unstructured",
    admm_epochs: int = 10,
    finetune_epochs: int = 10,
    batch_size: int = 64,
    lr: float = 5e-4,
    finetune_lr: float = 1e-3,
    rho: float = 0.01,
    objective: PwoAObjective | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[Masks, dict]:
    """Prune ``model`` in place (it becomes the student; a frozen copy is the teacher). Returns
    the masks and the cost (epochs, seconds)."""
    if admm_epochs < 1 or finetune_epochs < 0 or batch_size < 1 or not lr > 0 or not rho > 0:
        raise RobustlabError(
            "expected admm_epochs >= 1, finetune_epochs >= 0, batch_size >= 1, lr > 0 and rho > 0; "
            f"found {admm_epochs}, {finetune_epochs}, {batch_size}, {lr}, {rho}"
        )
    objective = objective or PwoAObjective()
    say = progress or (lambda _m: None)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        k = int(model(data.x[:2]).shape[1])
    layers = prunable(model, structure)
    U = {n: torch.zeros_like(m.weight) for n, m in layers}
    Z: dict[str, Tensor] = {}

    def update_z_u(epoch: int) -> None:
        with torch.no_grad():
            for n, m in layers:
                if epoch > 0:
                    U[n] += m.weight - Z[n]
            shifted = {n: m.weight + U[n] for n, m in layers}
            scores = {n: magnitude_scores(w, structure) for n, w in shifted.items()}
            projected = masks_from_scores(model, scores, sparsity, structure)
            for n, _ in layers:
                Z[n] = shifted[n] * projected[n][0]
        say(f"pwoa admm epoch {epoch + 1}/{admm_epochs} at sparsity {sparsity:g}")

    def admm_penalty() -> Tensor:
        return sum(0.5 * rho * (m.weight - Z[n] + U[n]).pow(2).sum() for n, m in layers)

    start = time.perf_counter()
    was_training = model.training
    model.train()
    try:
        _epochs(model, teacher, data, objective, admm_epochs, batch_size, lr, gen, k,
                extra=admm_penalty, on_epoch=update_z_u)  # fmt: skip
        masks = magnitude_masks(model, sparsity, structure)
        t_admm = time.perf_counter() - start
        apply_masks(model, masks)
        if finetune_epochs:
            say(f"pwoa retraining with masks at sparsity {sparsity:g}")
            with frozen_masks(model, masks):
                _epochs(model, teacher, data, objective, finetune_epochs, batch_size,
                        finetune_lr, gen, k)  # fmt: skip
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    return masks, {
        "admm_epochs": admm_epochs,
        "finetune_epochs": finetune_epochs,
        "admm_seconds": t_admm,
        "finetune_seconds": seconds - t_admm,
        "seconds": seconds,
    }

"""HYDRA (Sehwag et al. 2020, arXiv:2002.10509): importance scores optimised under the robust
training loss with the weights frozen, the mask being the top-k scores of each layer.

The forward pass uses ``w * mask(|s|)``; the mask's gradient passes straight through to the
scores (``dL/ds = dL/dw_eff * w * sign(s)``, as HYDRA's ``GetSubnet``). Scores start
proportional to the weights (HYDRA's scaled initialisation: ``sqrt(6 / fan_in) w / max|w|``), so
the first mask is the magnitude mask. The loss is any registered training method's (``pgd-at``,
``trades``, ``crown-ibp``...) at the schedule's eps; optimiser SGD with momentum 0.9 and a cosine
learning rate, as in the paper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from robustlab.compress.masks import Masks, masks_from_scores, prunable, top_mask
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.train.methods import StepContext, get_method
from robustlab.train.schedule import default_schedule

Progress = Callable[[str], None]


def scaled_scores(module: nn.Module, structure: str) -> Tensor:
    """HYDRA's scaled initialisation (per weight, or per output channel from its L1 norm)."""
    w = module.weight.detach()
    fan_in = w[0].numel()
    s = w if structure == "unstructured" else w.abs().reshape(w.shape[0], -1).sum(1)
    top = s.abs().max()
    return math.sqrt(6 / fan_in) * s / (top if top > 0 else 1.0)


def _score_gradient(
    g: Tensor, w0: Tensor, s: Tensor, structure: str, gb: Tensor | None = None, b0=None
) -> Tensor:
    """dL/ds through the straight-through mask: per weight, or per channel summed over the
    channel's weights and its bias (``gb``, ``b0``)."""
    if structure == "unstructured":
        return g * w0 * torch.sign(s)
    per_channel = (g * w0).reshape(w0.shape[0], -1).sum(1)
    if gb is not None and b0 is not None:
        per_channel = per_channel + gb * b0
    return per_channel * torch.sign(s)


def hydra_masks(
    model: nn.Module,
    data: Dataset,
    sparsity: float,
    *,
    structure: str = "unstructured",
    objective: str = "pgd-at",
    eps: float = 0.0,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[Masks, dict]:
    """The masks HYDRA's score optimisation chooses on ``data``; ``model``'s weights are left as
    they were. Returns the masks and the cost (epochs, seconds, steps)."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise RobustlabError(
            f"expected epochs >= 1, batch_size >= 1 and lr > 0; found {epochs}, {batch_size}, {lr}"
        )
    method = get_method(objective)
    schedule = default_schedule(objective, eps, epochs)
    layers = prunable(model, structure)
    w0 = {n: m.weight.detach().clone() for n, m in layers}
    b0 = {n: None if m.bias is None else m.bias.detach().clone() for n, m in layers}
    scores = {n: scaled_scores(m, structure).clone().requires_grad_(True) for n, m in layers}
    opt = torch.optim.SGD(list(scores.values()), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)  # fmt: skip
    steps = math.ceil(len(data) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        k = int(model(data.x[:2]).shape[1])
    weights = [m.weight for _, m in layers]
    # channel masks also switch biases off: their gradients reach the channel's score
    with_bias = [n for n, m in layers if m.bias is not None] if structure == "channel" else []
    biases = [dict(layers)[n].bias for n in with_bias]
    frozen = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    start = time.perf_counter()
    try:
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(data), generator=gen)
            for s in range(steps):
                idx = order[s * batch_size : (s + 1) * batch_size]
                t = epoch + s / steps
                with torch.no_grad():
                    for n, m in layers:
                        mask = top_mask(scores[n].detach().abs(), sparsity)
                        if structure == "unstructured":
                            m.weight.copy_(w0[n] * mask)
                        else:
                            shape = (-1,) + (1,) * (w0[n].dim() - 1)
                            m.weight.copy_(w0[n] * mask.reshape(shape))
                            if b0[n] is not None:
                                m.bias.copy_(b0[n] * mask)
                ctx = StepContext(schedule(t), schedule.progress(t), data.lower, data.upper, k,
                                  gen, model)  # fmt: skip
                out = method.step(model, data.x[idx], data.y[idx], ctx)
                grads = torch.autograd.grad(out.loss, weights + biases, allow_unused=True)
                gw = grads[: len(weights)]
                gb = dict(zip(with_bias, grads[len(weights) :], strict=True))
                opt.zero_grad()
                for (n, _), g in zip(layers, gw, strict=True):
                    if g is not None:
                        scores[n].grad = _score_gradient(g, w0[n], scores[n].detach(), structure,
                                                         gb.get(n), b0[n])  # fmt: skip
                opt.step()
                sched.step()
            if progress:
                progress(f"hydra scores epoch {epoch + 1}/{epochs} at sparsity {sparsity:g}: "
                         f"loss {float(out.loss.detach()):.3f}")  # fmt: skip
    finally:
        with torch.no_grad():
            for n, m in layers:
                m.weight.copy_(w0[n])
                if b0[n] is not None:
                    m.bias.copy_(b0[n])
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    final = {n: s.detach().abs() for n, s in scores.items()}
    masks = masks_from_scores(model, final, sparsity, structure)
    return masks, {
        "epochs": epochs,
        "steps": epochs * steps,
        "seconds": time.perf_counter() - start,
    }
